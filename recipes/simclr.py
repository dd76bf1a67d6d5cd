#!/usr/bin/env python
"""SimCLR on image shards (mmssl.objectives.simclr).

    accelerate launch recipes/simclr.py --config recipes/configs/simclr_demo.yaml key=value ...

Keys: mmssl.recipe_image.IMAGE_SSL_DEFAULTS plus `simclr.*` (the objective's arguments).
"""

from mmssl.cli import run_main
from mmssl.config import constructor_keys, set_defaults
from mmssl.models.encoders import build_encoder
from mmssl.objectives.simclr import SimCLR
from mmssl.recipe_image import IMAGE_SSL_DEFAULTS, run_image_recipe, two_views

DEFAULTS = set_defaults(IMAGE_SSL_DEFAULTS, {"output_dir": "runs/simclr", "simclr": constructor_keys(SimCLR)})


def objective(cfg):
    return SimCLR(build_encoder(cfg["backbone"]), **cfg["simclr"])


if __name__ == "__main__":
    run_main(lambda argv: run_image_recipe(argv, DEFAULTS, two_views, objective))
