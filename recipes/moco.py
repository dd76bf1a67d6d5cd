#!/usr/bin/env python
"""MoCo v2 on image shards (mmssl.objectives.moco; MoCo v3 is recipes/moco_v3.py).

    accelerate launch recipes/moco.py --config recipes/configs/moco_demo.yaml key=value ...

Keys: mmssl.recipe_image.IMAGE_SSL_DEFAULTS plus `moco.*` (the objective's arguments).
"""

from mmssl.cli import run_main
from mmssl.config import constructor_keys, set_defaults
from mmssl.models.encoders import build_encoder
from mmssl.objectives.moco import MoCo
from mmssl.recipe_image import IMAGE_SSL_DEFAULTS, run_image_recipe, two_views

DEFAULTS = set_defaults(IMAGE_SSL_DEFAULTS, {"output_dir": "runs/moco", "moco": constructor_keys(MoCo)})


def objective(cfg):
    return MoCo(build_encoder(cfg["backbone"]), **cfg["moco"])


if __name__ == "__main__":
    run_main(lambda argv: run_image_recipe(argv, DEFAULTS, two_views, objective))
