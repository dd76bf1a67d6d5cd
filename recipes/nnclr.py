#!/usr/bin/env python
"""NNCLR on image shards (mmssl.objectives.nnclr).

    accelerate launch recipes/nnclr.py --config recipes/configs/nnclr_demo.yaml key=value ...

Keys: mmssl.recipe_image.IMAGE_SSL_DEFAULTS plus `nnclr.*` (the objective's arguments).
"""

from mmssl.cli import run_main
from mmssl.config import constructor_keys, set_defaults
from mmssl.models.encoders import build_encoder
from mmssl.objectives.nnclr import NNCLR
from mmssl.recipe_image import IMAGE_SSL_DEFAULTS, run_image_recipe, two_views

DEFAULTS = set_defaults(IMAGE_SSL_DEFAULTS, {"output_dir": "runs/nnclr", "nnclr": constructor_keys(NNCLR)})


def objective(cfg):
    return NNCLR(build_encoder(cfg["backbone"]), **cfg["nnclr"])


if __name__ == "__main__":
    run_main(lambda argv: run_image_recipe(argv, DEFAULTS, two_views, objective))
