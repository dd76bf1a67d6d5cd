#!/usr/bin/env python
"""Jigsaw puzzles on image shards (mmssl.objectives.jigsaw).

    accelerate launch recipes/jigsaw.py --config recipes/configs/jigsaw_demo.yaml key=value ...

Keys: mmssl.recipe_image.IMAGE_SSL_DEFAULTS plus `jigsaw.*` (the objective's arguments).
"""

from mmssl.cli import run_main
from mmssl.config import constructor_keys, set_defaults
from mmssl.models.encoders import build_encoder
from mmssl.objectives.jigsaw import Jigsaw
from mmssl.recipe_image import IMAGE_SSL_DEFAULTS, one_image, run_image_recipe

DEFAULTS = set_defaults(IMAGE_SSL_DEFAULTS, {"output_dir": "runs/jigsaw", "jigsaw": constructor_keys(Jigsaw)})


def objective(cfg):
    return Jigsaw(build_encoder(cfg["backbone"]), **cfg["jigsaw"])


if __name__ == "__main__":
    run_main(lambda argv: run_image_recipe(argv, DEFAULTS, one_image, objective))
