"""The training step never waits for the device: between log, checkpoint and eval boundaries no
code of mmssl's reads a tensor's value on the host (`.item()`, `.tolist()`, `float(t)`, `if t:`,
`.cpu()`, ...). On a GPU each such read stalls the queue of kernels; on the CPU this test sees the
same calls. Boolean-mask indexing inside Hugging Face models (VideoMAE) is a read this cannot see."""
from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

import mmssl
from mmssl.config import plain
from mmssl.recipe_image import VIEWS, build_objective, image_defaults, image_objectives, run_image_ssl
from mmssl.train import fit, start
from mmssl.data import training_loader

from conftest import ROOT

PACKAGE = Path(mmssl.__file__).parent
HOST_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")
# Where a run reads the device on purpose: fit's boundary read (`LogWindow.read`), checkpoints,
# evaluations and the final save.
BOUNDARY = {"read", "save", "_run_eval", "save_encoders"}
# The data code that runs in the training process on the training device (fit's `on_device`).
ON_DEVICE = {"device_augment.py", "device_decode.py"}


class HostReads:
    """Counts host reads of tensors made by mmssl's own code (not its host-side data pipeline), by
    the function that made them."""

    def __init__(self, monkeypatch):
        self.sites: Counter = Counter()
        for name in HOST_READS:
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._counting(original))

    def _counting(self, original):
        sites = self.sites

        def wrapper(t, *args, **kwargs):
            frame = sys._getframe(1)
            path = Path(frame.f_code.co_filename)
            if PACKAGE in path.parents and ((PACKAGE / "data") not in path.parents or path.name in ON_DEVICE):
                site = f"{path.relative_to(PACKAGE)}:{frame.f_lineno} in {frame.f_code.co_name}"
                boundary = None
                while frame is not None and boundary is None:
                    if frame.f_code.co_name in BOUNDARY and Path(frame.f_code.co_filename).name in ("train.py", "watch.py", "checkpoint.py", "serialization.py"):
                        boundary = frame.f_code.co_name
                    frame = frame.f_back
                sites[(site, boundary)] += 1
            return original(t, *args, **kwargs)

        return wrapper

    def check(self, name: str) -> None:
        in_steps = {site: n for (site, boundary), n in self.sites.items() if boundary is None}
        assert not in_steps, f"{name}: host reads inside the training step: {in_steps}"
        boundary_reads = sum(n for (site, boundary), n in self.sites.items() if boundary == "read")
        assert boundary_reads == 1, f"{name}: {boundary_reads} boundary reads, expected one (at the last step)"


# The quick run (plain `pytest`) keeps the objectives whose steps once read the device; make test
# (CI) runs every one.
ONCE_READ = {"jigsaw", "mae", "supcon"}


@pytest.mark.parametrize("name", [n if n in ONCE_READ else pytest.param(n, marks=pytest.mark.slow)
                                  for n in image_objectives()])
def test_image_objective_steps_read_nothing_from_the_device(name, fashion_shards, tmp_path, monkeypatch):
    cfg = plain(image_defaults(name))
    cfg.update({"output_dir": str(tmp_path / name), "max_steps": 3, "log_every": 100, "save_every": 0,
                "batch_size": 8, "num_workers": 0, "tensorboard": False, "warmup_steps": 1})
    cfg["data"].update({"train": str(fashion_shards), "val": ""})
    torch.manual_seed(0)
    objective = build_objective(cfg)
    accelerator = start(cfg)
    loader = training_loader(cfg, VIEWS[objective.views](cfg))
    reads = HostReads(monkeypatch)
    fit(accelerator, cfg, objective, loader)
    monkeypatch.undo()
    reads.check(name)
    # The run ended like any other: its trained backbone saved, and it loads back.
    from mmssl.models.encoders import build_encoder

    assert build_encoder({"name": str(tmp_path / name / "encoder")}).out_dim == objective.backbone.out_dim



def load_recipe(name: str):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", ROOT / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


QUIET = ["max_steps=3", "log_every=100", "save_every=0", "num_workers=0", "tensorboard=false", "data.val="]
RECIPES = {  # recipe: (its demo config, the fixture it trains on, a few more keys)
    "clip": ("clip_demo", "caption_shards", ["image_size=32", "batch_size=4"]),
    "fixmatch": ("fixmatch_demo", "fashion_shards", ["labels.fraction=0.1", "batch_size=4", "mu=2", "eval_every=0"]),
    "pseudo_label": ("fixmatch_demo", "fashion_shards", ["objective=pseudo_label", "labels.fraction=0.1", "batch_size=4",
                                                         "mu=2", "eval_every=0"]),
    "videomae": ("videomae_demo", "motion_shards", ["batch_size=2"]),
    "temporal_order": ("temporal_order_demo", "motion_shards", ["batch_size=4"]),
    "rgb_flow": ("rgb_flow_demo", "motion_shards", ["batch_size=4"]),
    "cpc": ("cpc_demo", "speech_shards", ["batch_size=4", "probes=[]"]),
    "avc": ("avc_demo", "av_shards", ["batch_size=4", "probe.data="]),
    "simclr_on_device": ("simclr_demo", "fashion_shards", ["augment.on=device", "augment.blur=0.5",
                                                           "augment.solarize=0.2", "batch_size=8"]),
    "simclr_decode_on_device": ("simclr_demo", "jpeg_shards", ["augment.on=device", "augment.decode=device",
                                                               "batch_size=8"]),
}
SCRIPTS = {"pseudo_label": "fixmatch"}  # a recipe run by another recipe's script


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_steps_read_nothing_from_the_device(recipe, tmp_path, monkeypatch, request):
    config, fixture, extra = RECIPES[recipe]
    shards = request.getfixturevalue(fixture)
    shards = shards / "speech_speakers" if fixture == "speech_shards" else shards
    argv = ["--config", str(ROOT / "recipes" / "configs" / f"{config}.yaml"), f"output_dir={tmp_path / 'run'}",
            f"data.train={shards}", *QUIET, *extra]
    if recipe in ("fixmatch", "pseudo_label"):  # a classifier is scored at the end (an evaluation boundary)
        argv.append(f"data.val={shards}")
    main = run_image_ssl if recipe.startswith("simclr") else load_recipe(SCRIPTS.get(recipe, recipe)).main
    torch.manual_seed(0)
    reads = HostReads(monkeypatch)
    assert main(argv) == 0
    monkeypatch.undo()
    reads.check(recipe)
