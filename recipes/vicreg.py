#!/usr/bin/env python
"""VICReg on image shards (mmssl.objectives.vicreg).

    accelerate launch recipes/vicreg.py --config recipes/configs/vicreg_demo.yaml key=value ...

Keys: mmssl.recipe_image.IMAGE_SSL_DEFAULTS plus `vicreg.*` (the objective's arguments).
"""

from mmssl.cli import run_main
from mmssl.config import constructor_keys, set_defaults
from mmssl.models.encoders import build_encoder
from mmssl.objectives.vicreg import VICReg
from mmssl.recipe_image import IMAGE_SSL_DEFAULTS, run_image_recipe, two_views

DEFAULTS = set_defaults(IMAGE_SSL_DEFAULTS, {"output_dir": "runs/vicreg", "vicreg": constructor_keys(VICReg)})


def objective(cfg):
    return VICReg(build_encoder(cfg["backbone"]), **cfg["vicreg"])


if __name__ == "__main__":
    run_main(lambda argv: run_image_recipe(argv, DEFAULTS, two_views, objective))
