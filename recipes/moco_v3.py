#!/usr/bin/env python
"""MoCo v3 on image shards (mmssl.objectives.moco_v3).

    accelerate launch recipes/moco_v3.py --config recipes/configs/moco_v3_demo.yaml key=value ...

Keys: mmssl.recipe_image.IMAGE_SSL_DEFAULTS plus `moco_v3.*` (the objective's arguments).
"""

from mmssl.cli import run_main
from mmssl.config import constructor_keys, set_defaults
from mmssl.models.encoders import build_encoder
from mmssl.objectives.moco_v3 import MoCoV3
from mmssl.recipe_image import IMAGE_SSL_DEFAULTS, run_image_recipe, two_views

DEFAULTS = set_defaults(IMAGE_SSL_DEFAULTS, {"output_dir": "runs/moco_v3", "moco_v3": constructor_keys(MoCoV3)})


def objective(cfg):
    return MoCoV3(build_encoder(cfg["backbone"]), **cfg["moco_v3"])


if __name__ == "__main__":
    run_main(lambda argv: run_image_recipe(argv, DEFAULTS, two_views, objective))
