"""Checkpoints: `runs/<name>/checkpoints/step_XXXXXXX/`, complete or absent.

Each holds the Accelerate state (model in safetensors, optimizer), and our own files, all of which
load without unpickling arbitrary objects:
- `trainer.json`: the step and the LR scheduler state;
- `data_rank{r}.json`: each rank's stream position (epoch, samples consumed per worker, stats);
- `rng_rank{r}.pt` (tensors only, loaded with `weights_only=True`) and `rng_rank{r}.json`
  (Python and NumPy generator states): so dropout and masking continue exactly.

A checkpoint is written to `.step_XXXXXXX.tmp/` and renamed when every rank has finished, so a
kill at any moment leaves the previous checkpoints intact and no partial one under a final name.
Before the rename, `files.json` records every file's size and sha256; `resume=true` checks them and
falls back to the newest intact checkpoint when a disk or a copy damaged the newest one.
"""
from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from . import dist

STEP_DIR = re.compile(r"^step_(\d{7})$")
FILES = "files.json"


class CheckpointError(ValueError):
    """No checkpoint in the run folder can be resumed from; the message says why."""


def step_dir(root: Path, step: int) -> Path:
    return root / f"step_{step:07d}"


def _file_table(folder: Path) -> dict:
    from .data.writer import sha256_file

    return {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != FILES}


def damage(folder: Path) -> str | None:
    """Why checkpoint `folder` cannot be trusted (a missing, truncated or changed file), or None."""
    try:
        table = json.loads((folder / FILES).read_text())
    except FileNotFoundError:
        return f"no {FILES} (an empty or unfinished folder, or written by an older mmssl)"
    except ValueError:
        return f"{FILES} is not valid JSON"
    for name, want in table.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != want["size"]:
            return f"{name} has {path.stat().st_size} bytes, not {want['size']}"
    for name, want in table.items():  # sizes first: cheap, and they catch truncation
        from .data.writer import sha256_file

        if sha256_file(folder / name) != want["sha256"]:
            return f"{name} does not match its sha256"
    return None


def latest_intact(root: Path, say=print) -> Path | None:
    """The newest checkpoint under `root` whose files match `files.json`; each damaged newer one is
    named in one line. None when there is none at all; CheckpointError when none is intact."""
    if not root.is_dir():
        return None
    found = sorted(((int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir()),
                   reverse=True)
    for _, path in found:
        why = damage(path)
        if why is None:
            return path
        say(f"checkpoint {path} is damaged ({why}); trying the one before")
    if found:
        raise CheckpointError(f"no intact checkpoint in {root} to resume from (the newest, {found[0][1].name}: "
                              f"{damage(found[0][1])}); start again with overwrite=true")
    return None


def _rng_state() -> tuple[dict, dict]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["cuda"] = torch.cuda.get_rng_state_all()
    py = random.getstate()
    np_state = np.random.get_state()
    plain = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    return tensors, plain


def _set_rng_state(tensors: dict, plain: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(tensors["cuda"])
    v, state, gauss = plain["python"]
    random.setstate((v, tuple(state), gauss))
    name, keys, pos, has_gauss, cached = plain["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def save(accelerator, root: Path, step: int, scheduler, loader, keep: int) -> Path:
    """Write checkpoint `step` on every rank; returns its final path."""
    final, tmp = step_dir(root, step), root / f".step_{step:07d}.tmp"
    rank = dist.rank()
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    tensors, plain = _rng_state()
    torch.save(tensors, tmp / f"rng_rank{rank}.pt")
    (tmp / f"rng_rank{rank}.json").write_text(json.dumps(plain))
    (tmp / f"data_rank{rank}.json").write_text(json.dumps(loader.state_dict()))
    if accelerator.is_main_process:
        (tmp / "trainer.json").write_text(json.dumps({"step": step, "scheduler": scheduler.state_dict()}))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / FILES).write_text(json.dumps(_file_table(tmp), indent=1))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        older = sorted(p for p in root.iterdir() if STEP_DIR.match(p.name) and p != final)
        for p in older[: max(0, len(older) - (keep - 1))] if keep > 0 else []:
            shutil.rmtree(p, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load(accelerator, path: Path, scheduler, loader) -> int:
    """Restore model, optimizer, scheduler, data position and RNG from `path`; return its step."""
    rank = dist.rank()
    for need in ("trainer.json", f"data_rank{rank}.json", f"rng_rank{rank}.pt"):
        if not (path / need).exists():
            raise FileNotFoundError(f"checkpoint {path} has no {need} (saved with another world size?)")
    accelerator.load_state(str(path))
    trainer = json.loads((path / "trainer.json").read_text())
    scheduler.load_state_dict(trainer["scheduler"])
    loader.load_state_dict(json.loads((path / f"data_rank{rank}.json").read_text()))
    tensors = torch.load(path / f"rng_rank{rank}.pt", weights_only=True)
    _set_rng_state(tensors, json.loads((path / f"rng_rank{rank}.json").read_text()))
    return int(trainer["step"])
