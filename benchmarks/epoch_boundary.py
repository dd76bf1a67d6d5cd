#!/usr/bin/env python
"""What an epoch boundary costs the CLIP demo: the first step of each epoch against the median step.

    python benchmarks/epoch_boundary.py [--steps 56]

The CLIP demo (`recipes/configs/clip_demo.yaml`: 702 training images, batch 64, so 11 batches an
epoch, 2 data workers) is trained twice in the same run with one metrics line per step, evaluation
and checkpoints off:

- `persistent`: the loader as `fit` reads it, one DataLoader whose workers go on from one epoch
  to the next (`ShardLoader.forever`);
- `respawn`: the baseline, a new DataLoader for every epoch, so its workers are started again and
  refill their shuffle buffers while the step waits (what `forever` did before).

Step time is the batch over the logged `samples_per_s`. Printed and recorded in
benchmarks/results/epoch_boundary.json: mean time of the first step of epochs 2, 3, ... over the
median step, for each (target <= 1.2).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from record import write_record  # noqa: E402

BATCH = 64


def train(variant: str, run: Path, steps: int) -> None:
    """Run in a child process: the CLIP recipe, with the respawning loader where asked."""
    import importlib.util

    from mmssl.data.loader import ShardLoader

    if variant == "respawn":
        ShardLoader.forever = lambda self: (b for _ in itertools.count() for b in iter(self))
    spec = importlib.util.spec_from_file_location("clip_recipe", ROOT / "recipes" / "clip.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--config", str(ROOT / "recipes/configs/clip_demo.yaml"), f"output_dir={run}", f"max_steps={steps}",
                 "log_every=1", "save_every=0", "eval_every=0", "data.val=", "tensorboard=false",
                 f"batch_size={BATCH}"])


def step_times(variant: str, steps: int) -> tuple[list[float], list[int]]:
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        subprocess.run([sys.executable, __file__, "--child", variant, "--run", str(run), "--steps", str(steps)],
                       check=True, env=env, capture_output=True)
        rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "samples_per_s" in r]
    return [BATCH / r["samples_per_s"] for r in rows], [r["epoch"] for r in rows]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=56, help="training steps per variant (11 a epoch)")
    parser.add_argument("--child", choices=("persistent", "respawn"), help=argparse.SUPPRESS)
    parser.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        train(args.child, args.run, args.steps)
        return 0
    if not (ROOT / "shards" / "default_images" / "manifest.json").exists():
        print("epoch_boundary: error: run `make demo` (or tools/build_default_corpus.py) first to build the default corpus")
        return 2
    rows = {}
    for variant in ("respawn", "persistent"):
        times, epochs = step_times(variant, args.steps)
        # A step whose logged epoch is higher than the step before's read the new epoch's first batch.
        firsts = [i for i in range(1, len(times)) if epochs[i] > epochs[i - 1]]
        boundary = statistics.mean(times[i] for i in firsts)
        median = statistics.median(times[1:])  # step 1 builds everything: left out
        rows[variant] = {"median_step_s": round(median, 4), "epoch_first_step_s": round(boundary, 4),
                         "ratio": round(boundary / median, 3), "boundaries": len(firsts)}
        print(f"{variant:11s} median step {median * 1000:7.1f} ms   first step of an epoch {boundary * 1000:7.1f} ms"
              f"   ratio {boundary / median:.2f}  ({len(firsts)} boundaries)")
    print(f"persistent workers: epoch-boundary ratio {rows['persistent']['ratio']:.2f} (target <= 1.2), "
          f"against {rows['respawn']['ratio']:.2f} with workers respawned each epoch")
    write_record(ROOT / "benchmarks/results/epoch_boundary.json", steps=args.steps, batch=BATCH, rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
