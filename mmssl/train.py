"""`fit`: the one training loop every recipe uses.

Training is counted in steps (streams have no length). One step is `grad_accum` micro-batches,
one optimizer update and one scheduler step. Mixed precision comes from the accelerate config
(`accelerate config` or `--mixed_precision`), fp32 on CPU. The WebDataset loader is not prepared by
Accelerate (see mmssl.data.loader); the LR scheduler is stepped here once per step, not through
Accelerate, which would step it once per process.

Three optional objective attributes: `after_step(progress)`, called after each optimizer update
(momentum encoders); `lr_multipliers`, {submodule prefix: factor} for the optimizer's groups
(mmssl.optim.param_groups; BYOL's and SimSiam's predictor); and `fixed_lr`, submodule prefixes
whose learning rate the schedule leaves at its base value (SimSiam's predictor).
"""
from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.optim.lr_scheduler import LambdaLR

from . import checkpoint, dist
from .config import to_yaml
from .optim import build_optimizer, group_schedules, warmup_cosine

# Keys every recipe accepts (recipes add their own on top).
TRAIN_DEFAULTS = {
    "output_dir": "runs/run",
    "seed": 0,
    "max_steps": 100,
    "batch_size": 32,  # per process
    "grad_accum": 1,
    "lr": 1e-3,
    "min_lr_ratio": 0.0,
    "warmup_steps": 10,
    "weight_decay": 0.05,
    "optimizer": "adamw",  # adamw | lars | sgd
    "grad_clip": 1.0,  # 0 disables
    "log_every": 10,
    "save_every": 100,
    "keep_checkpoints": 2,
    "eval_every": 0,  # 0: only at the end
    "resume": False,
    "tensorboard": True,
    "num_workers": 2,
    "data": {"train": "shards/default_images", "val": "", "shuffle_buffer": 1000},
}


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf; the message names the step and the last good checkpoint."""


def start(cfg: dict):
    """Seed every generator, create the run folder and the Accelerator, write config.yaml."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    run_dir = Path(cfg["output_dir"])
    trackers = "tensorboard" if cfg["tensorboard"] else None
    accelerator = Accelerator(log_with=trackers, project_dir=str(run_dir))
    set_seed(cfg["seed"])
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(to_yaml(cfg))
    return accelerator


def _to_device(batch: dict, device) -> dict:
    """Move tensors (and lists of tensors, e.g. multi-crop views) to `device`; keep keys and texts."""
    def move(v):
        if isinstance(v, torch.Tensor):
            return v.to(device, non_blocking=True)
        if isinstance(v, list) and v and isinstance(v[0], torch.Tensor):
            return [x.to(device, non_blocking=True) for x in v]
        return v

    return {k: move(v) for k, v in batch.items()}


def _scalar(v) -> float:
    return float(v.detach().float().mean()) if isinstance(v, torch.Tensor) else float(v)


def _flat_hparams(cfg: dict, prefix="") -> dict:
    out = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.update(_flat_hparams(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


class MetricsLog:
    """`metrics.jsonl` (main process): one JSON object per event. On resume, lines past the
    checkpoint's step (written before the crash) are dropped so the file reads as one run."""

    def __init__(self, path: Path, active: bool, resume_step: int | None):
        self.path, self.active = path, active
        if active and resume_step is not None and path.exists():
            keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= resume_step]
            path.write_text("".join(ln + "\n" for ln in keep))
        elif active and resume_step is None and path.exists():
            path.unlink()

    def write(self, record: dict) -> None:
        if self.active:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def fit(accelerator, cfg: dict, objective: torch.nn.Module, loader, evaluate=None) -> dict:
    """Train `objective` on `loader` for `cfg['max_steps']` steps; returns the last eval metrics.

    evaluate(model, step) -> dict runs on the main process (every `eval_every` steps and at the end);
    other ranks wait. The model passed is unwrapped and in eval mode.
    """
    from tqdm import tqdm

    run_dir = Path(cfg["output_dir"])
    ckpt_root = run_dir / "checkpoints"
    max_steps, accum = cfg["max_steps"], cfg["grad_accum"]
    optimizer = build_optimizer(objective, cfg["optimizer"], cfg["lr"], cfg["weight_decay"],
                                lr_multipliers=getattr(objective, "lr_multipliers", None),
                                fixed_lr=getattr(objective, "fixed_lr", ()))
    scheduler = LambdaLR(optimizer, group_schedules(
        optimizer, lambda s: warmup_cosine(s, max_steps, cfg["warmup_steps"], cfg["min_lr_ratio"])))
    model, optimizer = accelerator.prepare(objective, optimizer)
    unwrapped = accelerator.unwrap_model(model)

    step, resumed_from = 0, None
    if cfg["resume"]:
        resumed_from = checkpoint.latest(ckpt_root)
        if resumed_from is not None:
            step = checkpoint.load(accelerator, resumed_from, scheduler, loader)
            accelerator.print(f"resumed from {resumed_from} at step {step}")
        else:
            accelerator.print(f"resume=true but no checkpoint in {ckpt_root}: starting from step 0")
    metrics = MetricsLog(run_dir / "metrics.jsonl", accelerator.is_main_process, step if resumed_from else None)
    if cfg["tensorboard"]:
        accelerator.init_trackers("tensorboard", config=_flat_hparams(cfg))

    global_batch = cfg["batch_size"] * accum * accelerator.num_processes
    stream = loader.forever()
    bar = tqdm(total=max_steps, initial=step, disable=not accelerator.is_local_main_process, desc="train",
               dynamic_ncols=True)
    last_ckpt = resumed_from
    last_eval: dict = {}
    window_start, window_steps = time.perf_counter(), 0
    model.train()
    try:
        while step < max_steps:
            logs: dict[str, float] = {}
            for micro in range(accum):
                batch = _to_device(next(stream), accelerator.device)
                sync = micro == accum - 1
                with accelerator.no_sync(model) if not sync and accelerator.num_processes > 1 else nullcontext():
                    with accelerator.autocast():
                        out = model(batch, progress=step / max_steps)
                    loss = out["loss"]
                    bad = torch.tensor(0.0 if torch.isfinite(loss).all() else 1.0, device=loss.device)
                    if dist.all_reduce_sum(bad).item() > 0:
                        raise TrainingDiverged(
                            f"loss became {_scalar(loss)} at step {step + 1}; stopped. "
                            f"Last good checkpoint: {last_ckpt or 'none'}")
                    accelerator.backward(loss / accum)
                for k, v in out.items():
                    logs[k] = logs.get(k, 0.0) + _scalar(v) / accum
            if cfg["grad_clip"] > 0:
                logs["grad_norm"] = _scalar(accelerator.clip_grad_norm_(model.parameters(), cfg["grad_clip"]))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            window_steps += 1
            after = getattr(unwrapped, "after_step", None)
            if after is not None:
                after(step / max_steps)
            bar.update(1)
            bar.set_postfix(loss=f"{logs['loss']:.4f}")
            if step % cfg["log_every"] == 0 or step == max_steps:
                elapsed = time.perf_counter() - window_start
                record = {"step": step, **logs, "lr": scheduler.get_last_lr()[0],
                          "samples_per_s": window_steps * global_batch / max(elapsed, 1e-9), "epoch": loader.epoch}
                metrics.write(record)
                accelerator.log({k: v for k, v in record.items() if k != "step"}, step=step)
                window_start, window_steps = time.perf_counter(), 0
            if cfg["save_every"] and (step % cfg["save_every"] == 0 or step == max_steps):
                last_ckpt = checkpoint.save(accelerator, ckpt_root, step, scheduler, loader, cfg["keep_checkpoints"])
            if evaluate is not None and ((cfg["eval_every"] and step % cfg["eval_every"] == 0) or step == max_steps):
                last_eval = _run_eval(accelerator, model, unwrapped, evaluate, step, metrics)
    finally:
        bar.close()
    data_stats = {f"data/{k}": v for k, v in loader.stats.items()}
    metrics.write({"step": step, "event": "end", **data_stats})
    if accelerator.is_main_process:
        save = getattr(unwrapped, "save_pretrained", None)
        if save is not None:
            save(run_dir / "encoder")
        plot_loss(run_dir / "metrics.jsonl", run_dir / "loss.png")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return last_eval


def _run_eval(accelerator, model, unwrapped, evaluate, step: int, metrics: MetricsLog) -> dict:
    result: dict = {}
    if accelerator.is_main_process:
        model.eval()
        with torch.no_grad():
            result = evaluate(unwrapped, step)
        model.train()
        metrics.write({"step": step, "event": "eval", **result})
        accelerator.log({f"eval/{k}": v for k, v in result.items() if isinstance(v, (int, float))}, step=step)
        accelerator.print(f"eval at step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in result.items()
                                                             if isinstance(v, float) and math.isfinite(v)))
    accelerator.wait_for_everyone()
    return result


def plot_loss(metrics_path: Path, out: Path) -> None:
    """Loss (and lr) against step from metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(ln) for ln in metrics_path.read_text().splitlines() if ln.strip()]
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
