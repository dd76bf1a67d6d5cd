#!/usr/bin/env python
"""Image decode + augment, per format: Pillow, Pillow's JPEG draft mode, torchvision.io (libpng,
libjpeg-turbo) and mmssl's choice among them (mmssl.data.image.decode_for_transform, as the recipes
call it and with the crop size as draft size), as ratios against Pillow in the same run.

    python benchmarks/decode.py [--images shards/default_images] [--sizes 64,224]

The PNG set is the default corpus's training images; the JPEG set is the same images encoded as
JPEG (quality 90) and, since draft mode only pays off on images larger than the crop, the same
again upscaled 4x (what photo corpora look like next to a 224 px crop). Each image is decoded and
put through the training transform (random resized crop, flip, normalise) at each size, in one
process with one thread. Recorded in benchmarks/results/decode.json.
"""
from __future__ import annotations

import argparse
import io
import statistics
import sys
import tarfile
import time
from pathlib import Path

import torch
from PIL import Image
from torchvision.io import ImageReadMode
from torchvision.io import decode_image as tv_decode
from torchvision.transforms import v2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from record import write_record  # noqa: E402

from mmssl.data.image import IMAGENET_MEAN, IMAGENET_STD, decode_for_transform, decode_image, train_transform  # noqa: E402


def pngs(shard_dir: Path) -> list[bytes]:
    out = []
    for p in sorted(shard_dir.glob("train-*.tar")):
        with tarfile.open(p) as tar:
            out += [tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".png")]
    return out


def corpus_pngs(shard_dir: Path, tool: str) -> list[bytes] | None:
    """`pngs(shard_dir)`, or None after one error line where no shards were built there."""
    if not (shard_dir / "manifest.json").exists():
        print(f"{tool}: error: {shard_dir} holds no shards (make corpus builds the default ones)")
        return None
    return pngs(shard_dir)


def as_jpeg(data: bytes, scale: int = 1) -> bytes:
    img = decode_image(data)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def per_second(fn, items: list[bytes], repeats: int = 3) -> float:
    best = []
    for _ in range(repeats):
        torch.manual_seed(0)
        t = time.perf_counter()
        for data in items:
            fn(data)
        best.append(len(items) / (time.perf_counter() - t))
    return statistics.median(best)


def methods(size: int) -> dict:
    pil_t = train_transform(size)
    tensor_t = v2.Compose([v2.RandomResizedCrop(size, scale=(0.2, 1.0), antialias=True), v2.RandomHorizontalFlip(),
                           v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    return {
        "pillow": lambda d: pil_t(decode_image(d)),
        "pillow_draft": lambda d: pil_t(decode_image(d, draft_size=size)),
        "torchvision_io": lambda d: tensor_t(tv_decode(torch.frombuffer(bytearray(d), dtype=torch.uint8),
                                                       mode=ImageReadMode.RGB)),
        # what ImageField does: as the recipes build it, and with the crop size as draft size
        "mmssl": lambda d: pil_t(decode_for_transform(d)),
        "mmssl_draft": lambda d: pil_t(decode_for_transform(d, draft_size=size)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=Path, default=ROOT / "shards" / "default_images")
    parser.add_argument("--sizes", default="64,224")
    args = parser.parse_args()
    png = corpus_pngs(args.images, "decode")
    if png is None:
        return 2
    torch.set_num_threads(1)
    sets = {"png": png, "jpeg": [as_jpeg(d) for d in png], "jpeg_4x": [as_jpeg(d, 4) for d in png[:200]]}
    sides = {name: statistics.median(Image.open(io.BytesIO(d)).width for d in items) for name, items in sets.items()}
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        for name, items in sets.items():
            ways = methods(size)
            if name == "png":  # draft mode is JPEG only
                ways.pop("pillow_draft")
                ways.pop("mmssl_draft")
            rates = {way: per_second(fn, items) for way, fn in ways.items()}
            for way, r in rates.items():
                rows.append({"set": name, "median_width": sides[name], "size": size, "method": way,
                             "images_per_s": round(r, 1), "ratio_vs_pillow": round(r / rates["pillow"], 3)})
                print(f"{name:8s} ({sides[name]:4.0f} px wide) -> {size:3d} px  {way:15s} {r:8.1f} images/s"
                      f"   x{r / rates['pillow']:.2f} vs Pillow")
    write_record(ROOT / "benchmarks/results/decode.json", images=str(args.images), rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
