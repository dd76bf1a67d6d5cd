#!/usr/bin/env python
"""Temporal order on video shards: Shuffle and Learn (mmssl.objectives.shuffle_and_learn) or order
prediction (mmssl.objectives.order_prediction), chosen by `temporal_order.task`.

    accelerate launch recipes/temporal_order.py --config recipes/configs/temporal_order_demo.yaml key=value ...

Keys: mmssl.recipe_video.VIDEO_DEFAULTS, `backbone` (the frame encoder spec, as in the image
recipes) and `temporal_order.*`:
  task         verify (Shuffle and Learn, in order or not) | sort (order prediction, 12 classes)
  hidden_dim   width of the classifier
  eval_frames  frames whose features are concatenated, in order, as the clip feature for probes
  fusion       difference (default: the classifier sees feature differences between frames) | concat

After training, `encoder/` holds the frame encoder (a transformers backbone loads with AutoModel).
"""

from mmssl.cli import run_main
from mmssl.config import Key, constructor_keys, set_defaults
from mmssl.models.encoders import build_encoder
from mmssl.objectives.order_prediction import OrderPrediction
from mmssl.objectives.shuffle_and_learn import ShuffleAndLearn
from mmssl.recipe_image import SMALL_RESNET
from mmssl.recipe_video import VIDEO_DEFAULTS, run_video_recipe

# The two objectives take the same arguments (tests/test_video_objectives.py checks it).
TASKS = {"verify": ShuffleAndLearn, "sort": OrderPrediction}
DEFAULTS = set_defaults(VIDEO_DEFAULTS, {
    "output_dir": "runs/temporal_order", "image_size": 64,
    "backbone": Key(SMALL_RESNET, "frame encoder spec (mmssl.models.encoders)"),
    "temporal_order": {"task": Key("verify", "verify: is this frame order correct (Shuffle and Learn); sort: which "
                                              "of the orders is it (order prediction)", choices=tuple(TASKS)),
                       **constructor_keys(ShuffleAndLearn)}})


def objective(cfg):
    keys = {k: v for k, v in cfg["temporal_order"].items() if k != "task"}
    return TASKS[cfg["temporal_order"]["task"]](build_encoder(cfg["backbone"]), **keys)


def main(argv=None) -> int:
    return run_video_recipe(argv, DEFAULTS, objective)


if __name__ == "__main__":
    run_main(main)
