"""How mmssl's own encoders are written to and read from a folder, and how a run's trained
encoders reach `RUN/encoder/` (a leaf module: torch and safetensors only).

A folder holds `model.safetensors` (the module's state dict, nothing pickled) and `mmssl_encoder.json`
(META): `{kind: constructor arguments, "out_dim": D}`. The kind names the class that reads it back
(`mmssl.models.encoders.build_encoder` knows them all). Hugging Face towers are written by
transformers itself, in its own format, not here.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from torch import nn

META = "mmssl_encoder.json"
WEIGHTS = "model.safetensors"


def save(module: nn.Module, directory: str | os.PathLike, kind: str, args, out_dim: int | None = None) -> Path:
    """Write `module`'s weights and the META sidecar `{kind: args}` into `directory`; -> the folder."""
    from safetensors.torch import save_file

    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path / WEIGHTS))
    (path / META).write_text(json.dumps({kind: args, **({"out_dim": out_dim} if out_dim is not None else {})}))
    return path


def read_meta(directory: str | os.PathLike) -> dict | None:
    """The META sidecar of `directory`, or None where there is none."""
    meta = Path(directory) / META
    return json.loads(meta.read_text()) if meta.exists() else None


def load_weights(directory: str | os.PathLike) -> dict:
    """The state dict in `directory` (safetensors only)."""
    from safetensors.torch import load_file

    return load_file(str(Path(directory) / WEIGHTS))


def save_towers(directory: str | os.PathLike, towers: dict) -> Path:
    """An objective with several towers: each `towers[name]` writes itself (its own `save_pretrained`,
    in its own format) into `directory/name`; -> the folder."""
    path = Path(directory)
    for name, tower in towers.items():
        tower.save_pretrained(path / name)
    return path


def save_encoders(objective: nn.Module, directory: Path, preprocessors: dict) -> None:
    """The one path by which a run's encoders reach disk: the objective's own `save_pretrained`
    where it has several towers (CLIP writes `image/` and `text/`), else its `backbone`'s; an object
    with neither (a test double) saves nothing. Each encoder class writes its own format (`save`
    here, or transformers for Hugging Face towers). `preprocessors`: `{subfolder: write(directory)}`."""
    save = getattr(objective, "save_pretrained", None)
    if save is None and isinstance(getattr(objective, "backbone", None), nn.Module):
        save = objective.backbone.save_pretrained
    if save is None:
        return
    save(directory)
    for sub, write in preprocessors.items():
        write(directory / sub)
