#!/usr/bin/env python
"""SupCon (needs labelled shards) on image shards (mmssl.objectives.supcon).

    accelerate launch recipes/supcon.py --config recipes/configs/supcon_demo.yaml key=value ...

Keys: mmssl.recipe_image.IMAGE_SSL_DEFAULTS plus `supcon.*` (the objective's arguments).
"""

from mmssl.cli import run_main
from mmssl.config import constructor_keys, set_defaults
from mmssl.models.encoders import build_encoder
from mmssl.objectives.supcon import SupCon
from mmssl.recipe_image import IMAGE_SSL_DEFAULTS, run_image_recipe, two_views, with_labels

DEFAULTS = set_defaults(IMAGE_SSL_DEFAULTS, {"output_dir": "runs/supcon", "supcon": constructor_keys(SupCon)})


def objective(cfg):
    return SupCon(build_encoder(cfg["backbone"]), **cfg["supcon"])


if __name__ == "__main__":
    run_main(lambda argv: run_image_recipe(argv, DEFAULTS, with_labels(two_views), objective))
