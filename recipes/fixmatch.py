#!/usr/bin/env python
"""Semi-supervised image classification: FixMatch, or Pseudo-Label as its simple baseline.

    accelerate launch recipes/fixmatch.py --config recipes/configs/fixmatch_demo.yaml key=value ...
    python recipes/fixmatch.py --config recipes/configs/fixmatch_demo.yaml objective=pseudo_label

Two streams train together (mmssl.data.ZippedLoaders), each resumed at its own position:
- labelled: `labels.fraction` of data.train's train split, the same number from every class, drawn
  with `seed` and written to `output_dir/subset` (or all of `labels.data`, a separate
  folder), `batch_size` images per step with the weak view;
- unlabelled: data.train's train split, `mu x batch_size` images per step, their labels (where
  there are any) read only to report pseudo-label accuracy; a sample without one is kept.
The moving average of the classifier is scored on data.val's `eval_split` (top-1, top-5) and
saved: `encoder/` (the backbone) and `encoder/head.safetensors`. `init=RUN` starts the backbone
from a self-supervised run's `encoder/`. Keys: mmssl.train.TRAIN_DEFAULTS plus those below.
"""
from __future__ import annotations

import os
from pathlib import Path

from mmssl.cli import run_main
from mmssl.config import ConfigError, Key, chosen, constructor_keys, from_cli, set_defaults
from mmssl.data import ImageField, LabelField, TwoViews, ZippedLoaders, strong_augment, training_loader, weak_augment, \
    weak_eval_transform
from mmssl.data.subset import LabelledSubset
from mmssl.eval.finetune import top_k
from mmssl.models.encoders import build_encoder, save_image_processor
from mmssl.objectives.fixmatch import FixMatch
from mmssl.objectives.pseudo_label import PseudoLabel
from mmssl.preflight import check_source, check_training_data, has_labels
from mmssl.recipe_image import RESNET_32PX
from mmssl.train import TRAIN_DEFAULTS, fit, start

METHODS = {"fixmatch": FixMatch, "pseudo_label": PseudoLabel}
COMMON = set_defaults(TRAIN_DEFAULTS, {
    "output_dir": "runs/fixmatch",
    "objective": Key("fixmatch", "fixmatch (Sohn et al. 2020) or pseudo_label (Lee 2013)", choices=tuple(METHODS)),
    "data": {"train": "shards/fashion_mnist", "val": "shards/fashion_mnist"},
    "labels": {"fraction": Key(0.1, "share of data.train's train split whose labels are used, the same number "
                                    "from every class (1.0: all)", above=0),
               "data": Key("", "a separate labelled folder, all of its train split ('': labels.fraction of "
                               "data.train)")},
    "mu": Key(7, "unlabelled images per labelled image in each step", min=1),
    "image_size": Key(32, "side of the square images the backbone sees", min=8),
    "backbone": Key(RESNET_32PX, "backbone spec (mmssl.models.encoders.build_encoder)"),
    "init": Key("", "a self-supervised run folder whose encoder/ starts the backbone ('': the backbone spec)"),
    "augment": {"strong_ops": Key(2, "RandAugment operations in the strong view", min=0),
                "cutout": Key(0.5, "largest Cutout square, as a share of the side (0 disables)", min=0),
                "flip": Key(True, "random horizontal flips in both views")},
    "eval_split": Key("val", "held-out split of data.val that the averaged classifier is scored on"),
})


def defaults(name: str) -> dict:
    """The keys of the chosen method: the common ones and its constructor's `NAME.*` section."""
    if name not in METHODS:
        raise ConfigError(f"objective must be one of {', '.join(METHODS)}, got '{name}'")
    return {**COMMON, name: constructor_keys(METHODS[name])}


def main(argv=None) -> int:
    name = chosen(argv, "objective", COMMON["objective"].default)
    cfg = from_cli(defaults(name), argv, title=f"recipes/fixmatch.py objective={name}: every config key")
    check_training_data(cfg)
    labelled_from = cfg["labels"]["data"] or cfg["data"]["train"]
    for spec, split, key in ((labelled_from, "train", "labels.data" if cfg["labels"]["data"] else "data.train"),
                             (cfg["data"]["val"], cfg["eval_split"], "data.val")):
        if not spec:
            raise ConfigError(f"{key} is empty: {name} trains a classifier and needs labelled data to score it")
        if not has_labels(check_source(spec, split, key)[0]):
            raise ConfigError(f"{key} ({spec}:{split}) has no labels (cls members): {name} needs them")
    if cfg["labels"]["fraction"] > 1:
        raise ConfigError(f"labels.fraction must be at most 1, got {cfg['labels']['fraction']}")
    if cfg["init"] and not os.path.isdir(Path(cfg["init"]) / "encoder"):
        raise ConfigError(f"init: {cfg['init']} holds no encoder/ folder (a finished mmssl run)")
    fraction = 1.0 if cfg["labels"]["data"] else cfg["labels"]["fraction"]
    labelled = LabelledSubset(labelled_from, "train", fraction, cfg["seed"], Path(cfg["output_dir"]))
    if len(labelled.keys) < cfg["batch_size"]:
        print(f"{len(labelled.keys)} labelled samples, fewer than batch_size={cfg['batch_size']}: "
              f"batch_size={len(labelled.keys)} (and {cfg['mu'] * len(labelled.keys)} unlabelled)")
        cfg["batch_size"] = len(labelled.keys)
    backbone = build_encoder({"name": str(Path(cfg["init"]) / "encoder")} if cfg["init"] else cfg["backbone"])
    objective = METHODS[name](backbone, labelled.classes, **cfg[name])
    accelerator = start(cfg)
    if accelerator.is_main_process:
        labelled.write(cfg["resume"])
    accelerator.wait_for_everyone()

    size, a = cfg["image_size"], cfg["augment"]
    weak = weak_augment(size, a["flip"])
    unlabelled_view = ImageField(TwoViews(weak, strong_augment(size, a["strong_ops"], a["cutout"], a["flip"])),
                                 out_key="views") if objective.strong_view else ImageField(weak)
    # A small labelled share fills whole batches from fewer workers (each reads its own piece).
    workers = min(cfg["num_workers"], max(1, len(labelled.keys) // cfg["batch_size"]))
    loader = ZippedLoaders({
        "labelled": training_loader(cfg, [ImageField(weak), LabelField()], spec=labelled.source, split=labelled.split,
                                    num_workers=workers),
        "unlabelled": training_loader(cfg, [unlabelled_view, LabelField(optional=True)],
                                      batch_size=cfg["mu"] * cfg["batch_size"], seed_offset=1),
    })

    def evaluate(model, step):
        ema = model.classifier.ema
        return top_k(lambda batch: ema(batch["image"]), next(ema.parameters()).device, cfg["data"]["val"],
                     cfg["eval_split"], ImageField(weak_eval_transform(size)), 256, labelled.classes)

    # The saved processor frames images as that evaluation does, for transformers and python -m mmssl.eval.
    fit(accelerator, cfg, objective, loader, evaluate,
        preprocessors={"": lambda d: save_image_processor(d, size, resize=size)})
    return 0


if __name__ == "__main__":
    run_main(main)
