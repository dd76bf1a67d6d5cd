#!/usr/bin/env python
"""DINO (2 global + augment.n_local local crops) on image shards (mmssl.objectives.dino).

    accelerate launch recipes/dino.py --config recipes/configs/dino_demo.yaml key=value ...

Keys: mmssl.recipe_image.IMAGE_SSL_DEFAULTS plus `dino.*` (the objective's arguments).
"""

from mmssl.cli import run_main
from mmssl.config import constructor_keys, set_defaults
from mmssl.models.encoders import build_encoder
from mmssl.objectives.dino import DINO
from mmssl.recipe_image import IMAGE_SSL_DEFAULTS, multi_crop, run_image_recipe

DEFAULTS = set_defaults(IMAGE_SSL_DEFAULTS, {"output_dir": "runs/dino", "dino": constructor_keys(DINO)})


def objective(cfg):
    return DINO(build_encoder(cfg["backbone"]), **cfg["dino"])


if __name__ == "__main__":
    run_main(lambda argv: run_image_recipe(argv, DEFAULTS, multi_crop, objective))
