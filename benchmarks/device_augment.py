#!/usr/bin/env python
"""GPU-side augmentation (`augment.on=device`) against the workers' (`augment.on=workers`), on a CPU:
does SimCLR learn as well, and what does drawing a batch's views cost?

    python benchmarks/device_augment.py [--steps 300] [--seeds 0,1,2] [--out runs/device_augment]

1. SimCLR's demo (recipes/configs/simclr_demo.yaml: Fashion-MNIST, 32 px, batch 256, one CPU
   process) for --steps steps at each seed, once with each setting; kNN (k=20) and linear top-1 on
   the test split from the recipe's final evaluation.
2. Views per second, in this process: ssl_augment image by image (what a worker does) against
   DeviceAugment on the whole batch, over the same uint8 squares (256 Fashion-MNIST images, the
   demo's settings), alternating, median of 5. On a GPU the batch path runs on the device and the
   workers are left with decoding; that has not been measured here.

Writes OUT/results.json and the record benchmarks/results/device_augment.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from image_ssl_table import DATA, train  # noqa: E402
from record import write_record  # noqa: E402

SIZE = 32


def views_per_second(repeats: int = 5) -> dict:
    from mmssl.data import ImageField, build_loader
    from mmssl.data.device_augment import DeviceAugment, load_transform
    from mmssl.data.views import ssl_augment

    loader = build_loader(DATA, [ImageField(load_transform(round(SIZE / 0.875)))], 256, num_workers=0, seed=0)
    images = next(iter(loader))["image"]
    worker, device = ssl_augment(SIZE, (0.2, 1.0), blur=0.0), DeviceAugment(SIZE, (0.2, 1.0), blur=0.0)
    times: dict[str, list[float]] = {"per image": [], "batch": []}
    for r in range(repeats):
        t0 = time.perf_counter()
        for img in images:
            worker(img), worker(img)
        times["per image"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        device(images, seed=r)
        times["batch"].append(time.perf_counter() - t0)
    rates = {k: 2 * len(images) / statistics.median(v) for k, v in times.items()}
    return {**rates, "batch_vs_per_image": rates["batch"] / rates["per image"], "threads": torch.get_num_threads()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out", type=Path, default=Path("runs/device_augment"))
    p.add_argument("--record", type=Path, default=ROOT / "benchmarks/results/device_augment.json")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    subprocess.run([sys.executable, str(ROOT / "tools/build_fashion_mnist.py"), "--out", DATA], check=True)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"speed": views_per_second()}
    s = results["speed"]
    print(f"views/s, one process ({s['threads']} threads): per image {s['per image']:.0f}, batch {s['batch']:.0f}, "
          f"ratio {s['batch_vs_per_image']:.2f}", flush=True)
    for where in ("workers", "device"):
        for seed in seeds:
            r = train(f"simclr_{where}_seed{seed}", args.steps, args.out, config="simclr_demo",
                      overrides=[f"augment.on={where}", f"seed={seed}"])
            del r["eval"]
            results.setdefault(where, {})[str(seed)] = r
            print(f"augment.on={where:8s} seed {seed}  kNN {100 * r['knn_top1']:5.1f}  linear {100 * r['linear_top1']:5.1f}  "
                  f"loss {r['first_loss']:.3f} -> {r['last_loss']:.3f}  {r['minutes']:.1f} min", flush=True)
            (args.out / "results.json").write_text(json.dumps(results, indent=1))

    def cell(where: str, key: str) -> str:
        values = [100 * r[key] for r in results[where].values()]
        return f"{statistics.mean(values):.1f} ({min(values):.1f}-{max(values):.1f})"

    lines = [f"SimCLR demo, Fashion-MNIST test split, {args.steps} steps of batch 256, seeds {args.seeds}: means, "
             "ranges in brackets.", "", "| augment.on | kNN top-1 (k=20) | linear top-1 | last loss | minutes |",
             "|---|---|---|---|---|"]
    for where in ("workers", "device"):
        recs = results[where].values()
        lines.append(f"| {where} | {cell(where, 'knn_top1')} | {cell(where, 'linear_top1')} | "
                     f"{statistics.mean(r['last_loss'] for r in recs):.3f} | "
                     f"{statistics.mean(r['minutes'] for r in recs):.1f} |")
    lines += ["", f"Views per second in one CPU process ({s['threads']} threads), 256 images, two views each: "
                  f"image by image {s['per image']:.0f}, the whole batch {s['batch']:.0f} "
                  f"(ratio {s['batch_vs_per_image']:.2f})."]
    table = "\n".join(lines)
    print(table)
    write_record(args.record, table=table, results=results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
