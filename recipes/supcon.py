#!/usr/bin/env python
"""SupCon (needs labelled shards) on image shards (mmssl.objectives.supcon).

    accelerate launch recipes/supcon.py --config recipes/configs/supcon_demo.yaml key=value ...

Keys: mmssl.recipe_image.IMAGE_SSL_DEFAULTS plus `supcon.*` (the objective's arguments).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmssl.cli import run_main  # noqa: E402
from mmssl.config import constructor_keys, set_defaults  # noqa: E402
from mmssl.models.encoders import build_encoder  # noqa: E402
from mmssl.objectives.supcon import SupCon  # noqa: E402
from mmssl.recipe_image import IMAGE_SSL_DEFAULTS, run_image_recipe, two_views, with_labels  # noqa: E402

DEFAULTS = set_defaults(IMAGE_SSL_DEFAULTS, {"output_dir": "runs/supcon", "supcon": constructor_keys(SupCon)})


def objective(cfg):
    return SupCon(build_encoder(cfg["backbone"]), **cfg["supcon"])


if __name__ == "__main__":
    run_main(lambda argv: run_image_recipe(argv, DEFAULTS, with_labels(two_views), objective))
