#!/usr/bin/env python
"""SwAV (2 global + augment.n_local local crops) on image shards (mmssl.objectives.swav).

    accelerate launch recipes/swav.py --config recipes/configs/swav_demo.yaml key=value ...

Keys: mmssl.recipe_image.IMAGE_SSL_DEFAULTS plus `swav.*` (the objective's arguments).
"""

from mmssl.cli import run_main
from mmssl.config import constructor_keys, set_defaults
from mmssl.models.encoders import build_encoder
from mmssl.objectives.swav import SwAV
from mmssl.recipe_image import IMAGE_SSL_DEFAULTS, multi_crop, run_image_recipe

DEFAULTS = set_defaults(IMAGE_SSL_DEFAULTS, {"output_dir": "runs/swav", "swav": constructor_keys(SwAV)})


def objective(cfg):
    return SwAV(build_encoder(cfg["backbone"]), **cfg["swav"])


if __name__ == "__main__":
    run_main(lambda argv: run_image_recipe(argv, DEFAULTS, multi_crop, objective))
