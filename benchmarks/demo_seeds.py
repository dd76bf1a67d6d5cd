#!/usr/bin/env python
"""The demo's figures over several seeds: what a newcomer running `make demo` should expect.

    python benchmarks/demo_seeds.py [--seeds 0,1,2] [--out benchmarks/results/demo_seeds.json]

For each seed: the demo's CLIP run (recipes/configs/clip_demo.yaml, seed=N) on the default corpus,
launched as `make demo` launches it (accelerate launch, one process, which sets one CPU thread: a
plain `python recipes/clip.py` uses every core and gives slightly different numbers at one seed),
then tools/clip_report.py on its held-out split. Prints each metric's min, mean and max over the
seeds and the table docs/demo.md shows (its untrained and chance columns from seed 0's report), and
writes every figure, the table, the commit and the command to --out. Needs the default corpus (`make corpus`).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from record import write_record

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "shards" / "default_images"


def run_seed(seed: int, runs: Path) -> dict:
    run = runs / f"demo_seed{seed}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    launch = [str(Path(sys.executable).parent / "accelerate"), "launch", "--num_processes", "1", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no"]  # as the Makefile's demo target
    subprocess.run([*launch, str(ROOT / "recipes" / "clip.py"), "--config",
                    str(ROOT / "recipes" / "configs" / "clip_demo.yaml"), f"output_dir={run}", f"seed={seed}",
                    "overwrite=true"], check=True, env=env, capture_output=True)
    seconds = time.perf_counter() - started
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "clip_report.py"), str(run), "--data", str(DATA)],
                          check=True, env=env, capture_output=True, text=True)
    summary = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("{")))
    summary.pop("report")
    return {"seed": seed, "train_seconds": round(seconds, 1), **summary}


# The report's metrics, named as the table shows them.
NAMES = {"image_to_text_R@1": "image → text R@1", "image_to_text_R@5": "image → text R@5",
         "image_to_text_R@10": "image → text R@10", "text_to_image_R@1": "text → image R@1",
         "text_to_image_R@5": "text → image R@5", "text_to_image_R@10": "text → image R@10",
         "zero_shot_top1": "zero-shot top-1", "zero_shot_top5": "zero-shot top-5",
         "knn_top1@20": "kNN top-1 (k = 20, image tower)", "linear_top1": "linear probe top-1 (image tower)"}


def table(rows: list[dict], spread: dict) -> str:
    """One row per metric: each seed, the range, and seed 0's untrained towers and chance."""
    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    head = ["metric (held-out split)", *(f"seed {r['seed']}" for r in rows), "min – max", "untrained", "chance"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, name in NAMES.items():
        s = spread[key]
        cells = [name, *(pct(r[key]) for r in rows), f"{100 * s['min']:.1f} – {pct(s['max'])}",
                 pct(rows[0]["untrained"][key]), pct(rows[0]["chance"][key])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--runs", type=Path, default=ROOT / "runs")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "demo_seeds.json")
    args = p.parse_args()
    if not (DATA / "manifest.json").exists():
        print(f"demo_seeds: error: {DATA} is missing; run `make corpus` first", file=sys.stderr)
        return 2
    rows = [run_seed(int(s), args.runs) for s in args.seeds.split(",")]
    metrics = [k for k in rows[0] if k not in ("seed", "train_seconds", "untrained", "chance")]
    print(f"{'metric':22s} {'min':>7s} {'mean':>7s} {'max':>7s}   ({len(rows)} seeds)")
    spread = {}
    for k in metrics:
        values = [r[k] for r in rows]
        spread[k] = {"min": min(values), "mean": statistics.mean(values), "max": max(values)}
        print(f"{k:22s} {100 * min(values):6.1f}% {100 * statistics.mean(values):6.1f}% {100 * max(values):6.1f}%")
    text = table(rows, spread)
    print(text)
    write_record(args.out, runs=rows, spread=spread, table=text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
