#!/usr/bin/env python
"""Rotation prediction on image shards (mmssl.objectives.rotation).

    accelerate launch recipes/rotation.py --config recipes/configs/rotation_demo.yaml key=value ...

Keys: mmssl.recipe_image.IMAGE_SSL_DEFAULTS plus `rotation.*` (the objective's arguments).
"""

from mmssl.cli import run_main
from mmssl.config import constructor_keys, set_defaults
from mmssl.models.encoders import build_encoder
from mmssl.objectives.rotation import Rotation
from mmssl.recipe_image import IMAGE_SSL_DEFAULTS, one_image, run_image_recipe

DEFAULTS = set_defaults(IMAGE_SSL_DEFAULTS, {"output_dir": "runs/rotation", "rotation": constructor_keys(Rotation)})


def objective(cfg):
    return Rotation(build_encoder(cfg["backbone"]), **cfg["rotation"])


if __name__ == "__main__":
    run_main(lambda argv: run_image_recipe(argv, DEFAULTS, one_image, objective))
