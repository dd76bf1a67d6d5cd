#!/usr/bin/env python
"""What one image costs a data worker under each `augment` setting of the two-view methods, on a CPU:
how much work `augment.on=device` and `augment.decode=device` take off the workers.

    python benchmarks/worker_load.py [--images shards/default_images] [--size 224] [--repeats 5]

The images are 512 of the default corpus's training images as JPEG (quality 90), at their own size (126 px
wide at the median) and upscaled 4x (480 px, nearer a photo corpus), as benchmarks/decode.py makes
them. Batches of 64 go through what a worker does with each sample and the batch's collate, in one
process with one thread:
- `augment.on=workers`: decode, then ssl_augment's two views at --size (SimCLR's GPU config);
- the same with torchvision's GaussianBlur (one 2-D pass) in place of SeparableGaussianBlur;
- `augment.on=device`: decode, resize and centre-crop to the load square (--size / 0.875);
- `augment.decode=device`: read the header, pass the JPEG's bytes on.
And `DeviceDecode` on the CPU: the decode and resize that decode=device leaves to the training
device, here done by the CPU in the training process (on a GPU it is nvJPEG's; not measured here).
Images per second, the median of --repeats rounds with the settings alternating, and the ratio
against augment.on=workers. Recorded in benchmarks/results/worker_load.json.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from decode import as_jpeg, corpus_pngs  # noqa: E402
from record import write_record  # noqa: E402

BATCH = 64


def settings(size: int) -> dict:
    """name -> batch of samples -> what the training process receives (or, for the last, makes)."""
    from mmssl.data import ImageField, TwoViews, ssl_augment
    from mmssl.data.device_augment import load_transform
    from mmssl.data.device_decode import DeviceDecode, EncodedJpegField
    from mmssl.data.fields import collate
    from mmssl.data.views import SeparableGaussianBlur
    from torchvision.transforms import v2

    load = round(size / 0.875)
    views = ImageField(TwoViews(ssl_augment(size, (0.08, 1.0), blur=0.5)), out_key="views")
    torchvision_blur = ssl_augment(size, (0.08, 1.0), blur=0.5)
    for step in torchvision_blur.transforms:
        if isinstance(step, v2.RandomApply) and isinstance(step.transforms[0], SeparableGaussianBlur):
            step.transforms[0] = v2.GaussianBlur(step.transforms[0].kernel_size, step.transforms[0].sigma)
    square = ImageField(load_transform(load))
    encoded = EncodedJpegField(load)
    on_cpu = DeviceDecode(load, "cpu")

    def fields(field):
        def run(batch):
            items = [field.decode(s) for s in batch]
            return field.collate(items) if hasattr(field, "collate") else {k: collate([it[k] for it in items])
                                                                           for k in items[0]}
        return run

    def decode_on_cpu(batch):
        return on_cpu(encoded.collate([encoded.decode(s) for s in batch])["image"])

    return {"augment.on=workers": fields(views),
            "augment.on=workers, torchvision's blur": fields(ImageField(TwoViews(torchvision_blur), out_key="views")),
            "augment.on=device": fields(square),
            "augment.decode=device": fields(encoded), "DeviceDecode on the CPU": decode_on_cpu}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=Path, default=ROOT / "shards" / "default_images")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    png = corpus_pngs(args.images, "worker_load")
    if png is None:
        return 2
    torch.set_num_threads(1)
    sets = {"jpeg (126 px)": [as_jpeg(d) for d in png[:512]], "jpeg 4x (480 px)": [as_jpeg(d, 4) for d in png[:512]]}
    ways = settings(args.size)
    rows, lines = [], [f"Per image, one process, one thread, batches of {BATCH}, views of {args.size} px "
                       f"(load square {round(args.size / 0.875)} px); median of {args.repeats} rounds.", "",
                       "| images | setting | images/s | ÷ augment.on=workers |", "|---|---|---|---|"]
    for name, data in sets.items():
        samples = [{"__key__": f"{i:06d}", "jpg": d} for i, d in enumerate(data)]
        batches = [samples[i:i + BATCH] for i in range(0, len(samples) - BATCH + 1, BATCH)]
        rates: dict = {way: [] for way in ways}
        for _ in range(args.repeats):
            for way, fn in ways.items():
                torch.manual_seed(0)
                t = time.perf_counter()
                for b in batches:
                    fn(b)
                rates[way].append(len(batches) * BATCH / (time.perf_counter() - t))
        base = statistics.median(rates["augment.on=workers"])
        for way, r in rates.items():
            rate = statistics.median(r)
            rows.append({"images": name, "setting": way, "images_per_s": round(rate, 1),
                         "ratio_vs_workers": round(rate / base, 2)})
            lines.append(f"| {name} | {way} | {rate:.0f} | {rate / base:.2f} |")
            print(f"{name:17s} {way:38s} {rate:9.1f} images/s  x{rate / base:.2f}", flush=True)
    table = "\n".join(lines)
    write_record(ROOT / "benchmarks/results/worker_load.json", table=table, rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
