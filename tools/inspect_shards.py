#!/usr/bin/env python
"""Stream one epoch of a shard folder through mmssl.data and report what came out.

    python tools/inspect_shards.py shards/default_images --fields image,text,label --preview out.png

Prints the manifest summary, batches and samples per second, and every skipped sample by reason;
with --preview, saves a picture of the first batch (images with captions, video frames, log-mels).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmssl.data import (AudioField, DataSpecError, ImageField, LabelField, TextField, VideoField,  # noqa: E402
                        build_loader, eval_transform, read_manifest)
from mmssl.data.image import tensor_to_pil as to_pil  # noqa: E402
from mmssl.data.shards import MANIFEST  # noqa: E402

FIELDS = {
    "image": lambda a: ImageField(eval_transform(a.size)),
    "text": lambda a: TextField(),
    "label": lambda a: LabelField(),
    "video": lambda a: VideoField(num_frames=8, stride=2, size=a.size, train=False),
    "audio": lambda a: AudioField(seconds=2.0, n_mels=64, train=False),
}


def mel_to_pil(mel: torch.Tensor, width: int, height: int):
    from PIL import Image

    m = mel[0]
    m = (m - m.min()) / (m.max() - m.min() + 1e-6)
    return Image.fromarray(m.flip(0).mul(255).byte().numpy()).resize((width, height))


def preview(batch: dict, path: Path, size: int, label_names: list[str], rows: int = 8) -> None:
    from PIL import Image, ImageDraw

    n = min(rows, len(batch["key"]))
    frames = batch["video"].shape[1] if "video" in batch else 1
    cols = frames + (2 if "mel" in batch else 0)
    text_h = 28
    sheet = Image.new("RGB", (cols * size, n * (size + text_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for i in range(n):
        y = i * (size + text_h)
        if "video" in batch:
            for t in range(frames):
                sheet.paste(to_pil(batch["video"][i, t]), (t * size, y))
        elif "image" in batch:
            sheet.paste(to_pil(batch["image"][i]), (0, y))
        if "mel" in batch:
            sheet.paste(mel_to_pil(batch["mel"][i], 2 * size, size), (frames * size, y))
        words = []
        if "label" in batch:
            lab = int(batch["label"][i])
            words.append(f"[{label_names[lab] if lab < len(label_names) else lab}]")
        if "text" in batch:
            words.append(batch["text"][i])
        draw.text((4, y + size + 4), " ".join(words)[: cols * size // 6], fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("shards", help="a folder written by tools/make_shards.py, or any folder of tars (img2dataset)")
    p.add_argument("--fields", default="image,text,label", help=f"comma-separated, from {', '.join(FIELDS)}")
    p.add_argument("--split", default="train")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--preview", type=Path, help="save a picture of the first batch here")
    args = p.parse_args(argv)
    names = [f.strip() for f in args.fields.split(",") if f.strip()]
    unknown = [f for f in names if f not in FIELDS]
    if unknown:
        print(f"inspect_shards: error: unknown field '{unknown[0]}' (choose from {', '.join(FIELDS)})", file=sys.stderr)
        return 2
    try:
        loader = build_loader(args.shards, [FIELDS[f](args) for f in names], args.batch_size, split=args.split,
                              num_workers=args.workers, drop_last=False)
        manifest = read_manifest(args.shards) if (Path(args.shards) / MANIFEST).exists() else None
    except DataSpecError as exn:
        print(f"inspect_shards: error: {exn}", file=sys.stderr)
        return 2
    if manifest is not None:
        splits = ", ".join(f"{s}: {e['count']} samples in {len(e['shards'])} shards" for s, e in manifest["splits"].items())
        print(f"{args.shards}: {splits}; modalities: {', '.join(manifest['modalities'])}; "
              f"{len(manifest['labels'])} labels; {len(manifest['skipped'])} inputs skipped when built")
    else:  # img2dataset, video2dataset or any folder of tars: counts from their stats or the headers
        src = loader.stream.sources[0]
        print(f"{args.shards} (no manifest.json): {src.total} samples in {len(src.urls)} shards")
        manifest = {}
    started, first = time.perf_counter(), None
    n_batches = n_samples = 0
    for batch in loader:
        if first is None:
            first = batch
        n_batches += 1
        n_samples += len(batch["key"])
    seconds = time.perf_counter() - started
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in first.items() if isinstance(v, torch.Tensor))
    print(f"streamed {n_samples} samples in {n_batches} batches, {seconds:.1f}s ({n_samples / seconds:.1f} samples/s, "
          f"{args.workers} workers); first batch: {shapes}")
    stats = dict(loader.stats)
    delivered = stats.pop("samples", 0)
    print(f"delivered {delivered}; skipped: " + (", ".join(f"{k} {v}" for k, v in sorted(stats.items())) or "none"))
    if args.preview:
        preview(first, args.preview, args.size, manifest.get("labels", []))
        print(f"preview of the first batch: {args.preview}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
