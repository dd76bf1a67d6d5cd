#!/usr/bin/env python
"""The demo's figures over several seeds: what a newcomer running `make demo` should expect.

    python benchmarks/demo_seeds.py [--seeds 0,1,2] [--out benchmarks/results/demo_seeds.json]

For each seed: the demo's CLIP run (recipes/configs/clip_demo.yaml, seed=N) on the default corpus,
launched as `make demo` launches it (accelerate launch, one process, which sets one CPU thread: a
plain `python recipes/clip.py` uses every core and gives slightly different numbers at one seed),
then tools/clip_report.py on its held-out split. Prints each metric's min, mean and max over the
seeds (untrained and chance columns come from the report of seed 0) and writes every figure, the
commit and the command to --out. Needs the default corpus (`make corpus`).
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
    metrics = [k for k in rows[0] if k not in ("seed", "train_seconds")]
    print(f"{'metric':22s} {'min':>7s} {'mean':>7s} {'max':>7s}   ({len(rows)} seeds)")
    spread = {}
    for k in metrics:
        values = [r[k] for r in rows]
        spread[k] = {"min": min(values), "mean": statistics.mean(values), "max": max(values)}
        print(f"{k:22s} {100 * min(values):6.1f}% {100 * statistics.mean(values):6.1f}% {100 * max(values):6.1f}%")
    write_record(args.out, runs=rows, spread=spread)
    return 0


if __name__ == "__main__":
    sys.exit(main())
