"""`fit`: the one training loop every recipe uses.

Training is counted in steps (streams have no length). One step is `grad_accum` micro-batches,
one optimizer update and one scheduler step. Mixed precision comes from the `mixed_precision` key
or else the accelerate config (`accelerate config` or `--mixed_precision`), fp32 on CPU. The WebDataset loader is not prepared by
Accelerate (see mmssl.data.loader); the LR scheduler is stepped here once per step, not through
Accelerate, which would step it once per process.

The step never waits for the device: logged values are summed on it (`mmssl.watch.LogWindow`) and
the non-finite guard skips a bad update inside the optimizer's kernel (`watch.NonFiniteGuard`); the
host reads the device once at each log, checkpoint and eval boundary.

Three optional objective attributes: `after_step(progress)`, called after each optimizer update
(momentum encoders); `lr_multipliers`, {submodule prefix: factor} for the optimizer's groups
(mmssl.optim.param_groups; BYOL's and SimSiam's predictor); and `fixed_lr`, submodule prefixes
whose learning rate the schedule leaves at its base value (SimSiam's predictor).
"""
from __future__ import annotations

import math
import signal
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.optim.lr_scheduler import LambdaLR

from . import checkpoint, dist
from .config import ConfigError, Key, to_yaml
from .data.shards import sample_seed
from .models.serialization import save_encoders
from .optim import build_optimizer, group_schedules, warmup_cosine
from .watch import LogWindow, MetricsLog, NonFiniteGuard, RunInterrupted, StopSignals, TrainingDiverged, plot_loss

# Keys every recipe accepts (recipes add their own on top, with mmssl.config.set_defaults).
TRAIN_DEFAULTS = {
    "output_dir": Key("runs/run", "run folder: config.yaml, metrics.jsonl, checkpoints/, encoder/, plots"),
    "overwrite": Key(False, "replace a finished or interrupted run in output_dir (only the files a run writes)"),
    "resume": Key(False, "continue the run in output_dir from its newest intact checkpoint"),
    "seed": Key(0, "seed of every generator: data order, augmentations, initialisation, masks"),
    "max_steps": Key(100, "optimizer steps to train (streams have no length)", min=1),
    "batch_size": Key(32, "samples per process per micro-step", min=1),
    "grad_accum": Key(1, "micro-steps per optimizer step", min=1),
    "lr": Key(1e-3, "peak learning rate (after warmup)", above=0),
    "min_lr_ratio": Key(0.0, "final learning rate of the cosine schedule, as a share of lr", min=0),
    "warmup_steps": Key(10, "linear warmup steps", min=0),
    "weight_decay": Key(0.05, "decoupled weight decay (biases and norms are exempt)", min=0),
    "optimizer": Key("adamw", "optimizer", choices=("adamw", "lars", "sgd")),
    "betas": Key([0.9, 0.999], "AdamW's (beta1, beta2)", min=0),
    "grad_clip": Key(1.0, "clip the gradient norm to this (0 disables)", min=0),
    "log_every": Key(10, "steps between metrics.jsonl lines (each holds the means over those steps)", min=1),
    "save_every": Key(100, "steps between checkpoints, and one at the end (0: none but on SIGTERM or Ctrl-C)", min=0),
    "keep_checkpoints": Key(2, "newest checkpoints kept", min=1),
    "eval_every": Key(0, "steps between evaluations (0: only at the end)", min=0),
    "tensorboard": Key(True, "also log to tensorboard under output_dir"),
    "num_workers": Key(2, "data-loader worker processes per process", min=0),
    "mixed_precision": Key("auto", "autocast: auto (what `accelerate launch` or its config says), no, bf16, or fp16 "
                           "(GPU only, with loss scaling)", choices=("auto", "no", "bf16", "fp16")),
    "compile": Key("off", "torch.compile the objective with this backend before training (inductor, slow to start, "
                          "is the one worth measuring on long GPU runs)", choices=("off", "inductor", "aot_eager")),
    "channels_last": Key(False, "convolution weights and 4-D image batches in channels-last memory format "
                                "(faster convolutions on recent GPUs)"),
    "data": {
        "train": Key("shards/default_images", "training shards: a make_shards folder, a folder of tars, a pattern"),
        "val": Key("", "evaluation shards ('' skips evaluation); where it was data.train's folder, setting only "
                   "data.train moves it too, scored on that folder's held-out split", follows="data.train"),
        "shuffle_buffer": Key(1000, "samples in each worker's shuffle buffer", min=0),
        "prefetch_factor": Key(2, "batches each data worker prepares ahead (with num_workers > 0)", min=1),
        "pin_memory": Key(True, "copy batches through page-locked memory, so the GPU copy overlaps compute "
                                "(only where there is a GPU)"),
    },
}


def last_line(exn: BaseException) -> str:
    """The message itself: an error raised in a DataLoader worker arrives wrapped in its traceback."""
    text = str(exn).strip().splitlines()[-1] if str(exn).strip() else type(exn).__name__
    prefix = f"{type(exn).__module__}.{type(exn).__name__}: "
    return text[len(prefix):] if text.startswith(prefix) else text


# What a run writes in output_dir. `overwrite=true` removes these and nothing else.
RUN_OUTPUTS = ("config.yaml", "metrics.jsonl", "loss.png", "report.md", "retrieval.png", "checkpoints", "encoder",
               "reconstructions", "localisation", "tensorboard", "subset", "labelled_keys.txt")
# Any of these means the folder holds a run that started training.
RUN_MARKERS = ("metrics.jsonl", "checkpoints", "encoder")
_run_lock = None  # held for the life of the process (the kernel drops it when the process ends)


def check_run_dir(cfg: dict) -> None:
    """Refuse (ConfigError) an output_dir that holds a run, unless resume=true or overwrite=true."""
    run_dir = Path(cfg["output_dir"])
    if cfg["resume"] and cfg["overwrite"]:
        raise ConfigError("resume=true and overwrite=true exclude each other")
    held = [m for m in RUN_MARKERS if (run_dir / m).exists()]
    if held and not cfg["resume"] and not cfg["overwrite"]:
        raise ConfigError(f"{run_dir} already holds a run ({held[0]}): pass resume=true to continue it, "
                          f"overwrite=true to replace it, or another output_dir")
    if held and cfg["resume"] and not any((run_dir / "checkpoints").glob("step_*")):
        raise ConfigError(f"resume=true: {run_dir} holds a run but no checkpoint to continue from; "
                          "pass overwrite=true to start it again")


def start(cfg: dict):
    """Check and lock the run folder, seed every generator, create the Accelerator, write config.yaml.

    Nothing in output_dir is touched before the checks pass; with overwrite=true only the files a
    run writes (RUN_OUTPUTS) are removed.
    """
    global _run_lock
    import shutil

    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from .lock import FolderLock, FolderLocked

    check_run_dir(cfg)
    if cfg["mixed_precision"] == "fp16" and not torch.cuda.is_available():
        raise ConfigError("mixed_precision=fp16 needs a GPU; on the CPU use bf16 or no")
    run_dir = Path(cfg["output_dir"])
    trackers = "tensorboard" if cfg["tensorboard"] else None
    precision = {} if cfg["mixed_precision"] == "auto" else {"mixed_precision": cfg["mixed_precision"]}
    accelerator = Accelerator(log_with=trackers, project_dir=str(run_dir), **precision)
    set_seed(cfg["seed"])
    if accelerator.is_main_process:
        try:
            _run_lock = FolderLock(run_dir, "training run").acquire()
        except FolderLocked as exn:
            raise ConfigError(str(exn)) from None
        if cfg["overwrite"]:
            for name in RUN_OUTPUTS:
                path = run_dir / name
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
        (run_dir / "config.yaml").write_text(to_yaml(cfg))
    accelerator.wait_for_everyone()
    return accelerator


def _to_device(batch: dict, device, channels_last: bool = False) -> dict:
    """Move tensors (and lists of tensors, e.g. multi-crop views, and the batches of named streams,
    mmssl.data.ZippedLoaders) to `device`; keep keys and texts. With `channels_last`, 4-D floating
    tensors (image batches) arrive in channels-last memory format."""
    def one(x):
        if channels_last and x.ndim == 4 and x.is_floating_point():
            return x.to(device, non_blocking=True, memory_format=torch.channels_last)
        return x.to(device, non_blocking=True)

    def move(v):
        if isinstance(v, torch.Tensor):
            return one(v)
        if isinstance(v, list) and v and isinstance(v[0], torch.Tensor):
            return [one(x) for x in v]
        if isinstance(v, dict):
            return _to_device(v, device, channels_last)
        return v

    return {k: move(v) for k, v in batch.items()}


def _flat_hparams(cfg: dict, prefix="") -> dict:
    out = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.update(_flat_hparams(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


def fit(accelerator, cfg: dict, objective: torch.nn.Module, loader, evaluate=None, preprocessors=None,
        on_device=None) -> dict:
    """Train `objective` on `loader` for `cfg['max_steps']` steps; returns the last eval metrics.
    At the end the main process writes the trained encoders to `output_dir/encoder` (`save_encoders`).

    `loader` is a `ShardLoader`, or a `ZippedLoaders` of named streams whose batches arrive as
    `{name: batch}`, each stream resumed at its own position.

    evaluate(model, step) -> dict runs on the main process (every `eval_every` steps and at the end);
    other ranks wait. The model passed is unwrapped and in eval mode.

    preprocessors: `{subfolder: write(directory)}`, what turns raw input into the encoder's input
    (an image processor config, a tokenizer), written next to the tower it feeds.

    on_device(batch, seed) -> batch: work on each batch once it is on the device, before the step
    (GPU-side augmentation, mmssl.data.device_augment); `seed` is fixed by the run's seed, the step,
    the micro-step and the rank, so a resumed run draws what the run it continues drew.
    """
    from tqdm import tqdm

    run_dir = Path(cfg["output_dir"])
    ckpt_root = run_dir / "checkpoints"
    max_steps, accum = cfg["max_steps"], cfg["grad_accum"]
    if cfg["channels_last"]:
        objective.to(memory_format=torch.channels_last)
    if cfg["compile"] != "off":
        objective.compile(backend=cfg["compile"])  # in place: parameter names, checkpoints and encoders unchanged
    optimizer = build_optimizer(objective, cfg["optimizer"], cfg["lr"], cfg["weight_decay"], cfg["betas"],
                                lr_multipliers=getattr(objective, "lr_multipliers", None),
                                fixed_lr=getattr(objective, "fixed_lr", ()))
    scheduler = LambdaLR(optimizer, group_schedules(
        optimizer, lambda s: warmup_cosine(s, max_steps, cfg["warmup_steps"], cfg["min_lr_ratio"])))
    model, optimizer = accelerator.prepare(objective, optimizer)
    unwrapped = accelerator.unwrap_model(model)

    step, resumed_from = 0, None
    if cfg["resume"]:
        resumed_from = checkpoint.latest_intact(ckpt_root, accelerator.print)
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
    window = LogWindow()
    guard = NonFiniteGuard(accelerator, optimizer)
    one_process = accelerator.num_processes == 1
    window_start = time.perf_counter()
    model.train()
    signals = StopSignals()
    stopping = None
    try:
        while step < max_steps and stopping is None:
            for micro in range(accum):
                batch = _to_device(next(stream), accelerator.device, cfg["channels_last"])
                if on_device is not None:
                    seed = sample_seed(cfg["seed"], step, micro, accelerator.process_index)
                    batch = _to_device(on_device(batch, seed), accelerator.device, cfg["channels_last"])
                sync = micro == accum - 1
                with accelerator.no_sync(model) if not sync and accelerator.num_processes > 1 else nullcontext():
                    with accelerator.autocast():
                        out = model(batch, progress=step / max_steps)
                    accelerator.backward(out["loss"] / accum)
                guard.see_loss(out["loss"])
                window.add(out, 1 / accum)
            grad_norm = (accelerator.clip_grad_norm_(model.parameters(), cfg["grad_clip"]) if cfg["grad_clip"] > 0
                         else torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None]))
            window.add({"grad_norm": grad_norm})
            guard.before_update(grad_norm, step + 1)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            window.steps += 1
            after = getattr(unwrapped, "after_step", None)
            if after is not None:
                after(step / max_steps)
            bar.update(1)
            logging = step % cfg["log_every"] == 0 or step == max_steps
            saving = bool(cfg["save_every"]) and (step % cfg["save_every"] == 0 or step == max_steps)
            evaluating = evaluate is not None and ((cfg["eval_every"] and step % cfg["eval_every"] == 0)
                                                   or step == max_steps)
            # The host reads the device only here: at log, checkpoint and eval boundaries, or (in one
            # process) when a signal came. Several processes agree on a stop at these boundaries.
            if not (logging or saving or evaluating or (one_process and signals.received is not None)):
                continue
            stop = dist.all_reduce_sum(torch.tensor(float(signals.received is not None), device=accelerator.device))
            logs, *first, stop = window.read(*guard.first, stop)
            if (bad := guard.describe(first)) is not None:
                accelerator.end_training()  # as on the other exits; every rank reads the same all-reduced flag here
                raise TrainingDiverged(f"{bad} at step {guard.first_bad_step}; stopped. "
                                       f"Last good checkpoint: {last_ckpt or 'none'}")
            if stop:
                stopping = signals.received or signal.SIGTERM
            if logging or stopping:
                elapsed = time.perf_counter() - window_start
                record = {"step": step, **logs, "lr": scheduler.get_last_lr()[0],
                          "samples_per_s": window.steps * global_batch / max(elapsed, 1e-9), "epoch": loader.epoch}
                metrics.write(record)
                accelerator.log({k: v for k, v in record.items() if k != "step"}, step=step)
                bar.set_postfix(loss=f"{logs['loss']:.4f}")
                window.reset()
                window_start = time.perf_counter()
            if saving or stopping:
                last_ckpt = checkpoint.save(accelerator, ckpt_root, step, scheduler, loader, cfg["keep_checkpoints"])
            if stopping:
                break
            if evaluating:
                last_eval = _run_eval(accelerator, model, unwrapped, evaluate, step, metrics)
    finally:
        stream.close()  # the data workers end with the loop
        bar.close()
        signals.restore()
    data_stats = {f"data/{k}": v for k, v in loader.stats.items()}
    if stopping:
        name = signal.Signals(stopping).name
        metrics.write({"step": step, "event": "interrupted", "signal": name, **data_stats})
        accelerator.wait_for_everyone()
        accelerator.end_training()
        raise RunInterrupted(f"{name} at step {step}: checkpoint {last_ckpt} written; continue with resume=true",
                             0 if stopping == signal.SIGTERM else 128 + int(stopping))
    metrics.write({"step": step, "event": "end", **data_stats})
    if accelerator.is_main_process:
        save_encoders(unwrapped, run_dir / "encoder", preprocessors or {})
        plot_loss(run_dir / "metrics.jsonl", run_dir / "loss.png")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return last_eval


def _run_eval(accelerator, model, unwrapped, evaluate, step: int, metrics: MetricsLog) -> dict:
    """Evaluate on the main process. An evaluation that fails is logged as failed (metrics.jsonl and
    one line on screen) and training goes on: checkpoints and the final encoder are not lost to it."""
    result: dict = {}
    if accelerator.is_main_process:
        model.eval()
        try:
            with torch.no_grad():
                result = evaluate(unwrapped, step)
        except Exception as exn:  # noqa: BLE001 - any failure of an evaluation is reported, not fatal
            message = f"{type(exn).__name__}: {last_line(exn)}"
            metrics.write({"step": step, "event": "eval", "failed": message})
            accelerator.print(f"eval at step {step} failed ({message}); training goes on")
            result = {}
        finally:
            model.train()
        if not result:
            accelerator.wait_for_everyone()
            return result
        metrics.write({"step": step, "event": "eval", **result})
        accelerator.log({f"eval/{k}": v for k, v in result.items() if isinstance(v, (int, float))}, step=step)
        accelerator.print(f"eval at step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in result.items()
                                                             if isinstance(v, float) and math.isfinite(v)))
    accelerator.wait_for_everyone()
    return result
