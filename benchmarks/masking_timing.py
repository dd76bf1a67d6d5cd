"""Timing shared by the masked-modelling benchmarks: medians over alternating settings."""
from __future__ import annotations

import statistics
import time


def alternating_medians(make, settings, repeats: int) -> dict:
    """make(setting) -> a no-argument function to time. Runs each once to warm up, then `repeats`
    rounds that time every setting in turn (so drift hits them alike); -> {setting: median ms}."""
    for s in settings:
        make(s)()
    times = {s: [] for s in settings}
    for _ in range(repeats):
        for s in settings:
            run = make(s)
            t0 = time.perf_counter()
            run()
            times[s].append(time.perf_counter() - t0)
    return {s: statistics.median(t) * 1000 for s, t in times.items()}


def train_step(loss_of, opt, sync):
    """loss_of(setting) -> loss; -> make(setting) for `alternating_medians`: one forward, backward
    and optimizer step, then `sync` (torch.cuda.synchronize on GPU)."""
    def make(setting):
        def run():
            loss = loss_of(setting)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sync()
        return run
    return make
