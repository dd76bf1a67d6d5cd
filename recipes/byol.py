#!/usr/bin/env python
"""BYOL on image shards (mmssl.objectives.byol).

    accelerate launch recipes/byol.py --config recipes/configs/byol_demo.yaml key=value ...

Keys: mmssl.recipe_image.IMAGE_SSL_DEFAULTS plus `byol.*` (the objective's arguments).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmssl.cli import run_main  # noqa: E402
from mmssl.config import constructor_keys, set_defaults  # noqa: E402
from mmssl.models.encoders import build_encoder  # noqa: E402
from mmssl.objectives.byol import BYOL  # noqa: E402
from mmssl.recipe_image import IMAGE_SSL_DEFAULTS, run_image_recipe, two_views  # noqa: E402

DEFAULTS = set_defaults(IMAGE_SSL_DEFAULTS, {"output_dir": "runs/byol", "byol": constructor_keys(BYOL)})


def objective(cfg):
    return BYOL(build_encoder(cfg["backbone"]), **cfg["byol"])


if __name__ == "__main__":
    run_main(lambda argv: run_image_recipe(argv, DEFAULTS, two_views, objective))
