"""What the video recipes (VideoMAE, temporal order) share: config keys, the clip field and evaluation.

A recipe names its objective and calls `run_video_recipe`: config -> video shards -> objective ->
`mmssl.train.fit`. Clips are `video [B, T, C, H, W]`, decoded by decord in the data workers: T =
`num_frames` frames `stride` apart, shorter videos looped (`mmssl.data.video`), resized and
cropped to `image_size`. Evaluation (every `eval_every` steps and at the end) classifies the
centre clips of `eval_split` by kNN and a linear probe on the objective's frozen
`video_features`, with `eval_train_split` as the bank and training set.
"""
from __future__ import annotations

import sys
from pathlib import Path

from .config import Key, set_defaults
from .data import VideoField, training_loader
from .eval.video_tasks import video_probes
from .train import TRAIN_DEFAULTS, fit, start

VIDEO_DEFAULTS = set_defaults(TRAIN_DEFAULTS, {
    "data": {"train": "shards/motion", "val": "shards/motion", "shuffle_buffer": 500},
    "num_frames": Key(16, "frames per clip", min=1),
    "stride": Key(1, "frames between the frames of a clip", min=1),
    "image_size": Key(96, "side of the square crops", min=8),
    "min_frames": Key(2, "clips with fewer decodable frames are skipped (short_video)", min=1),
    "eval_tasks": Key(["knn", "linear"], "probes of the frozen clip features (run only where the data has labels)",
                      choices=("knn", "linear")),
    "eval_split": Key("val", "held-out split of data.val that is scored"),
    "eval_train_split": Key("train", "split of data.val the kNN bank and the linear probe train on"),
})


def run_video_recipe(argv, defaults: dict, build_objective, extra_eval=None, train_field=None) -> int:
    """build_objective(cfg) -> objective with `video_features(video) -> [B, D]`;
    extra_eval(objective, step, cfg) -> dict adds to each evaluation; train_field(cfg) -> the training field
    (default: a `VideoField`; RGB-flow adds the flow)."""
    from .config import from_cli
    from .preflight import check_training_data, plan_eval

    cfg = from_cli(defaults, argv, title=f"{Path(sys.argv[0]).name}: every config key")
    check_training_data(cfg)
    tasks = plan_eval(cfg, (cfg["eval_split"], cfg["eval_train_split"]))
    objective = build_objective(cfg)
    accelerator = start(cfg)
    field = train_field(cfg) if train_field else \
        VideoField(cfg["num_frames"], cfg["stride"], cfg["image_size"], train=True, min_frames=cfg["min_frames"])
    loader = training_loader(cfg, [field])
    evaluate = None
    if cfg["data"]["val"] and (tasks or extra_eval):
        def evaluate(model, step):
            device = next(model.parameters()).device
            out = {}
            if tasks:  # the probe computes kNN and linear together
                out = video_probes(lambda v: model.video_features(v.to(device)), cfg["data"]["val"],
                                   cfg["eval_split"], cfg["eval_train_split"], cfg["num_frames"], cfg["stride"],
                                   cfg["image_size"])
            return {**out, **(extra_eval(model, step, cfg) if extra_eval else {})}

    fit(accelerator, cfg, objective, loader, evaluate)
    return 0
