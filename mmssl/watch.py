"""What `mmssl.train.fit` watches while it trains, without holding up the device.

- `LogWindow`: what the objective reports, summed on the device between log lines;
- `NonFiniteGuard`: no update is applied with a non-finite loss or gradient (`TrainingDiverged`);
- `StopSignals`: SIGTERM and Ctrl-C end the run after a checkpoint (`RunInterrupted`);
- `MetricsLog` and `plot_loss`: `metrics.jsonl` and `loss.png`.
"""
from __future__ import annotations

import json
import math
import signal
import threading
from pathlib import Path

import torch

from . import dist
from .optim import skips_on_device


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf; the message names the step and the last good checkpoint."""


class RunInterrupted(Exception):
    """SIGTERM or SIGINT arrived: the step finished, a checkpoint was written; `code` is the exit status."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def _json_or_none(line: str) -> dict | None:
    """A metrics line, or None for a blank one or one a kill cut short."""
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


class MetricsLog:
    """`metrics.jsonl` (main process): one JSON object per event. On resume, lines past the
    checkpoint's step (written before the crash) are dropped so the file reads as one run."""

    def __init__(self, path: Path, active: bool, resume_step: int | None):
        self.path, self.active = path, active
        if active and resume_step is not None and path.exists():
            keep = [ln for ln in path.read_text(errors="replace").splitlines()
                    if (rec := _json_or_none(ln)) is not None and rec.get("step", 0) <= resume_step]
            path.write_text("".join(ln + "\n" for ln in keep))
        elif active and resume_step is None and path.exists():
            path.unlink()

    def write(self, record: dict) -> None:
        if self.active:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


class LogWindow:
    """What an objective reports, summed over the steps since the last log line without leaving the
    device, and read with one transfer at the boundary: means over the window's steps."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor | float] = {}
        self.steps = 0

    def add(self, out: dict, weight: float = 1.0) -> None:
        for k, v in out.items():
            v = v.detach().float().mean() if isinstance(v, torch.Tensor) else float(v)
            self.sums[k] = self.sums.get(k, 0.0) + v * weight

    def read(self, *extra: torch.Tensor | float) -> list:
        """-> [{key: window mean}, then `extra` as floats]: one host synchronisation for all of them."""
        keys = list(self.sums)
        values = [self.sums[k] for k in keys] + list(extra)
        device = next((v.device for v in values if isinstance(v, torch.Tensor)), "cpu")
        flat = torch.stack([torch.as_tensor(v, dtype=torch.float32, device=device).reshape(()) for v in values]).tolist()
        steps = max(self.steps, 1)
        return [{k: v / steps for k, v in zip(keys, flat)}, *flat[len(keys):]]

    def reset(self) -> None:
        self.sums, self.steps = {}, 0


class NonFiniteGuard:
    """No optimizer update is applied with a non-finite loss (on any rank) or gradient.

    The check stays on the device: the flag goes to the optimizer as `found_inf`, which skips the
    update in its kernel (mmssl.optim). `first` carries the first bad step, its loss and gradient
    norm on the device to the next boundary, where `fit` stops with one line naming that step. Under fp16 loss scaling the
    scaler owns `found_inf` (an overflow there is routine); a non-finite loss still stops the run.
    Optimisers without the protocol fall back to one host check per step.
    """

    def __init__(self, accelerator, optimizer):
        self.inner = getattr(optimizer, "optimizer", optimizer)
        self.scaled = getattr(accelerator, "scaler", None) is not None
        self.on_device = skips_on_device(optimizer)
        self.device = accelerator.device
        self.loss_bad = torch.zeros((), device=self.device)
        self.first = torch.zeros(3, device=self.device)  # (step, loss, gradient norm) of the first bad step
        self.first_bad_step = 0

    def see_loss(self, loss: torch.Tensor) -> None:
        self.last_loss = loss.detach().float().mean()
        self.loss_bad = self.loss_bad + (~torch.isfinite(self.last_loss)).float()

    def before_update(self, grad_norm: torch.Tensor, step: int) -> None:
        loss_bad = dist.all_reduce_sum(self.loss_bad)
        bad = loss_bad > 0
        if not self.scaled:  # an overflowing scaled gradient is the scaler's business, and routine
            bad = bad | ~torch.isfinite(grad_norm.float())
        new = bad & (self.first[0] == 0)
        now = torch.stack([torch.full((), float(step), device=self.device), self.last_loss, grad_norm.float()])
        self.first = torch.where(new, now, self.first)
        if not self.scaled:
            if self.on_device:
                self.inner.found_inf = bad.float()
            elif bool(bad):
                raise TrainingDiverged(f"loss or gradient became non-finite at step {step}")
        self.loss_bad = torch.zeros((), device=self.device)

    def describe(self, first: list[float]) -> str | None:
        """'loss became nan' / 'gradient norm became inf', or None when every step was finite."""
        step, loss, norm = first
        if step == 0:
            return None
        self.first_bad_step = int(step)
        if not math.isfinite(loss):
            return f"loss became {loss}"
        return f"gradient norm became {norm}" if not math.isfinite(norm) else "loss became non-finite on another rank"


class StopSignals:
    """SIGTERM (pre-emption) and SIGINT (Ctrl-C) only set a flag: the loop finishes its step, writes
    a checkpoint and stops. A second signal of either kind stops at once, as before."""

    def __init__(self):
        self.received: int | None = None
        self._old = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.received is not None:
            self.restore()
            signal.raise_signal(signum)
            return
        self.received = signum

    def restore(self) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old = {}


def plot_loss(metrics_path: Path, out: Path) -> None:
    """Loss (and lr) against step from metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for ln in metrics_path.read_text(errors="replace").splitlines() if (r := _json_or_none(ln))]
    train = [r for r in rows if "loss" in r and "event" not in r]
    if not train:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    ax2.plot([r["step"] for r in train], [r["lr"] for r in train], color="tab:gray", alpha=0.5, label="lr")
    ax2.set_ylabel("lr")
    ax.set_title(f"{metrics_path.parent.name}: loss")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
