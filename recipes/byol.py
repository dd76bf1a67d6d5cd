#!/usr/bin/env python
"""BYOL on image shards (mmssl.objectives.byol).

    accelerate launch recipes/byol.py --config recipes/configs/byol_demo.yaml key=value ...

Keys: mmssl.recipe_image.IMAGE_SSL_DEFAULTS plus `byol.*` (the objective's arguments).
"""

from mmssl.cli import run_main
from mmssl.config import constructor_keys, set_defaults
from mmssl.models.encoders import build_encoder
from mmssl.objectives.byol import BYOL
from mmssl.recipe_image import IMAGE_SSL_DEFAULTS, run_image_recipe, two_views

DEFAULTS = set_defaults(IMAGE_SSL_DEFAULTS, {"output_dir": "runs/byol", "byol": constructor_keys(BYOL)})


def objective(cfg):
    return BYOL(build_encoder(cfg["backbone"]), **cfg["byol"])


if __name__ == "__main__":
    run_main(lambda argv: run_image_recipe(argv, DEFAULTS, two_views, objective))
