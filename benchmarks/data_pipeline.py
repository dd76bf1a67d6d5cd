#!/usr/bin/env python
"""Data-path throughput, as ratios against baselines measured in the same run.

    python benchmarks/data_pipeline.py [--images shards/default_images] [--videos shards/default_videos]

1. image pipeline (tar -> decode -> augment -> batch) vs the bare decode+augment loop over the same
   bytes held in memory, both in one process: the cost of our streaming machinery (target >= 0.9);
2. image pipeline with 2 workers vs torchvision ImageFolder + DataLoader with 2 workers over the
   same image files (target >= 1.0);
3. image pipeline with 2 workers vs the plain `webdataset` pipeline a user would write over the
   same shards (`wds.WebDataset(urls).shuffle(...).decode("pil")` + the same augmentation, batched,
   in a `WebLoader` with 2 workers; target >= 1.0);
4. video pipeline vs a bare decord loop over the same mp4 bytes, one process (target >= 0.9), and
   vs the plain `webdataset` pipeline with decord in a `map` (target >= 1.0);
5. tools/make_shards.py (one worker) vs a bare tarfile write loop over the same files: the cost of
   validating every image and writing journal, hashes and manifest.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmssl.data import ImageField, VideoField, build_loader, train_transform  # noqa: E402
from mmssl.data.image import decode_for_transform, decode_image  # noqa: E402


def members(shard_dir: Path, exts: tuple[str, ...]) -> list[tuple[str, bytes]]:
    out = []
    for p in sorted(shard_dir.glob("train-*.tar")):
        with tarfile.open(p) as tar:
            for m in tar.getmembers():
                if m.name.rsplit(".", 1)[-1] in exts:
                    out.append((m.name, tar.extractfile(m).read()))
    return out


def rate(fn) -> float:
    t = time.perf_counter()
    n = fn()
    return n / (time.perf_counter() - t)


def paired(ours, baseline, repeats: int) -> tuple[float, float]:
    """Median samples/s of `ours` and `baseline`, run alternately after one warm-up each, so that
    drifts of a shared machine hit both sides alike."""
    ours(), baseline()
    a, b = [], []
    for _ in range(repeats):
        a.append(rate(ours))
        b.append(rate(baseline))
    return statistics.median(a), statistics.median(b)


def bench_images(shards: Path, size: int, batch: int, repeats: int) -> list[tuple[str, float, float]]:
    transform = train_transform(size)
    data = members(shards, ("png", "jpg", "webp"))
    torch.manual_seed(0)

    def bare():
        items = []
        for _, b in data:
            items.append(transform(decode_for_transform(b)))  # the decoder ImageField uses
            if len(items) == batch:
                torch.stack(items)
                items = []
        return len(data) - len(items)

    def ours(workers):
        def run():
            loader = build_loader(shards, [ImageField(transform)], batch, num_workers=workers, shuffle_buffer=256)
            return sum(len(b["key"]) for b in loader)
        return run

    ours0, bare_rate = paired(ours(0), bare, repeats)
    with tempfile.TemporaryDirectory() as tmp:
        for name, b in data:  # the same bytes as files, in class folders, for ImageFolder
            path = Path(tmp) / "c" / name.rsplit("/", 1)[-1]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b)
        from torchvision.datasets import ImageFolder

        folder = ImageFolder(tmp, transform=transform, loader=lambda p: decode_image(Path(p).read_bytes()))

        def imagefolder():
            loader = torch.utils.data.DataLoader(folder, batch_size=batch, shuffle=True, num_workers=2, drop_last=True)
            return sum(len(x) for x, _ in loader)

        ours2, if_rate = paired(ours(2), imagefolder, repeats)

    def webdataset_pipeline():
        import webdataset as wds

        ds = (wds.WebDataset(train_urls(shards), shardshuffle=False, empty_check=False).shuffle(256).decode("pil")
              .to_tuple("png;jpg;jpeg;webp").map_tuple(transform).batched(batch, partial=False))
        return sum(len(x[0]) for x in wds.WebLoader(ds, batch_size=None, num_workers=2))

    ours2w, wds_rate = paired(ours(2), webdataset_pipeline, repeats)
    return [
        ("image pipeline, 1 process", ours0, bare_rate, "bare decode+augment loop over in-memory bytes"),
        ("image pipeline, 2 workers", ours2, if_rate, "torchvision ImageFolder + DataLoader, 2 workers"),
        ("image pipeline, 2 workers", ours2w, wds_rate, "plain webdataset pipeline, WebLoader, 2 workers"),
    ]


def train_urls(shards: Path) -> list[str]:
    return [str(p) for p in sorted(shards.glob("train-*.tar"))]


def bench_video(shards: Path, repeats: int) -> list[tuple[str, float, float, str]]:
    from mmssl.data.video import clip_indices, open_video, resize_crop

    field = VideoField(num_frames=8, stride=2, size=112, train=True)
    data = members(shards, ("mp4",))

    def clip(b: bytes) -> torch.Tensor:
        vr = open_video(b)
        frames = torch.from_numpy(vr.get_batch(clip_indices(len(vr), 8, 2, True)).asnumpy())
        x = resize_crop(frames.permute(0, 3, 1, 2).float().div_(255), 112, True)
        return (x - field.mean) / field.std

    def bare():
        for _, b in data:
            clip(b)
        return len(data)

    def ours():
        loader = build_loader(shards, [field], 4, num_workers=0, drop_last=False)
        return sum(len(b["key"]) for b in loader)

    def webdataset_pipeline():
        import webdataset as wds

        ds = wds.WebDataset(train_urls(shards), shardshuffle=False, empty_check=False).map(lambda s: (clip(s["mp4"]),))
        return sum(len(b[0]) for b in ds.batched(4, partial=True))  # b: (clips [B, T, C, H, W],)

    return [("video pipeline, 1 process", *paired(ours, bare, repeats), "bare decord loop over the same mp4 bytes"),
            ("video pipeline, 1 process", *paired(ours, webdataset_pipeline, repeats),
             "plain webdataset pipeline, decord in a map")]


def bench_make_shards(shards: Path) -> tuple[str, float, float, str]:
    data = members(shards, ("png", "jpg"))
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src" / "c"
        src.mkdir(parents=True)
        for name, b in data:
            (src / name.rsplit("/", 1)[-1]).write_bytes(b)
        files = sorted(src.iterdir())
        t = time.perf_counter()
        with tarfile.open(Path(tmp) / "bare.tar", "w") as tar:
            for f in files:
                tar.add(f, arcname=f.name)
        bare = len(files) / (time.perf_counter() - t)
        t = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "tools" / "make_shards.py"), "images", str(src.parent),
                        str(Path(tmp) / "out"), "--workers", "1", "--no-progress"], check=True, capture_output=True)
        ours = len(files) / (time.perf_counter() - t)
    return ("make_shards.py, 1 core", ours, bare, "bare tarfile write loop (no validation)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=Path, default=ROOT / "shards" / "default_images")
    p.add_argument("--videos", type=Path, default=ROOT / "shards" / "default_videos")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5, help="alternating timed runs per pair (median reported)")
    p.add_argument("--out", type=Path, help="also write the rows, the commit and the command to this JSON file")
    args = p.parse_args()
    for d in (args.images, args.videos):
        if not (d / "manifest.json").exists():
            print(f"data_pipeline: error: {d} has no manifest.json; run `make demo` (or tools/build_default_corpus.py)")
            return 2
    torch.set_num_threads(1)
    print(f"cores: {os.cpu_count()}, torch threads: 1, image size {args.size}, batch {args.batch}")
    rows = bench_images(args.images, args.size, args.batch, args.repeats)
    rows += bench_video(args.videos, args.repeats)
    rows.append(bench_make_shards(args.images))
    print(f"{'measurement':30s} {'ours/s':>9s} {'baseline/s':>11s} {'ratio':>6s}  baseline")
    for name, ours, base, what in rows:
        print(f"{name:30s} {ours:9.1f} {base:11.1f} {ours / base:6.2f}  {what}")
    if args.out:
        from record import write_record

        write_record(args.out, rows=[{"measurement": n, "ours_per_s": round(o, 1), "baseline_per_s": round(b, 1),
                                      "ratio": round(o / b, 3), "baseline": w} for n, o, b, w in rows])
    return 0


if __name__ == "__main__":
    sys.exit(main())
