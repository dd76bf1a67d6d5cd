#!/usr/bin/env python
"""Barlow Twins on image shards (mmssl.objectives.barlow_twins).

    accelerate launch recipes/barlow_twins.py --config recipes/configs/barlow_twins_demo.yaml key=value ...

Keys: mmssl.recipe_image.IMAGE_SSL_DEFAULTS plus `barlow_twins.*` (the objective's arguments).
"""

from mmssl.cli import run_main
from mmssl.config import constructor_keys, set_defaults
from mmssl.models.encoders import build_encoder
from mmssl.objectives.barlow_twins import BarlowTwins
from mmssl.recipe_image import IMAGE_SSL_DEFAULTS, run_image_recipe, two_views

DEFAULTS = set_defaults(IMAGE_SSL_DEFAULTS, {"output_dir": "runs/barlow_twins", "barlow_twins": constructor_keys(BarlowTwins)})


def objective(cfg):
    return BarlowTwins(build_encoder(cfg["backbone"]), **cfg["barlow_twins"])


if __name__ == "__main__":
    run_main(lambda argv: run_image_recipe(argv, DEFAULTS, two_views, objective))
