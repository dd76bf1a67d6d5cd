#!/usr/bin/env python
"""SimSiam on image shards (mmssl.objectives.simsiam).

    accelerate launch recipes/simsiam.py --config recipes/configs/simsiam_demo.yaml key=value ...

Keys: mmssl.recipe_image.IMAGE_SSL_DEFAULTS plus `simsiam.*` (the objective's arguments).
"""

from mmssl.cli import run_main
from mmssl.config import constructor_keys, set_defaults
from mmssl.models.encoders import build_encoder
from mmssl.objectives.simsiam import SimSiam
from mmssl.recipe_image import IMAGE_SSL_DEFAULTS, run_image_recipe, two_views

DEFAULTS = set_defaults(IMAGE_SSL_DEFAULTS, {"output_dir": "runs/simsiam", "simsiam": constructor_keys(SimSiam)})


def objective(cfg):
    return SimSiam(build_encoder(cfg["backbone"]), **cfg["simsiam"])


if __name__ == "__main__":
    run_main(lambda argv: run_image_recipe(argv, DEFAULTS, two_views, objective))
