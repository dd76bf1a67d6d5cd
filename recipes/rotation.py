#!/usr/bin/env python
"""Rotation prediction on image shards (mmssl.objectives.rotation).

    accelerate launch recipes/rotation.py --config recipes/configs/rotation_demo.yaml key=value ...

Keys: mmssl.recipe_image.IMAGE_SSL_DEFAULTS plus `rotation.*` (the objective's arguments).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmssl.cli import run_main  # noqa: E402
from mmssl.config import constructor_keys, set_defaults  # noqa: E402
from mmssl.models.encoders import build_encoder  # noqa: E402
from mmssl.objectives.rotation import Rotation  # noqa: E402
from mmssl.recipe_image import IMAGE_SSL_DEFAULTS, one_image, run_image_recipe  # noqa: E402

DEFAULTS = set_defaults(IMAGE_SSL_DEFAULTS, {"output_dir": "runs/rotation", "rotation": constructor_keys(Rotation)})


def objective(cfg):
    return Rotation(build_encoder(cfg["backbone"]), **cfg["rotation"])


if __name__ == "__main__":
    run_main(lambda argv: run_image_recipe(argv, DEFAULTS, one_image, objective))
