#!/usr/bin/env python
"""DINO (2 global + augment.n_local local crops) on image shards (mmssl.objectives.dino).

    accelerate launch recipes/dino.py --config recipes/configs/dino_demo.yaml key=value ...

Keys: mmssl.recipe_image.IMAGE_SSL_DEFAULTS plus `dino.*` (the objective's arguments).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmssl.cli import run_main  # noqa: E402
from mmssl.models.encoders import build_encoder  # noqa: E402
from mmssl.objectives.dino import DINO  # noqa: E402
from mmssl.recipe_image import IMAGE_SSL_DEFAULTS, multi_crop, run_image_recipe  # noqa: E402

DEFAULTS = {**IMAGE_SSL_DEFAULTS, "output_dir": "runs/dino",
            "dino": {"out_dim": 65536, "hidden_dim": 2048, "bottleneck_dim": 256, "n_global": 2, "student_temp": 0.1,
                     "teacher_temp": 0.04, "warmup_teacher_temp": 0.04, "teacher_temp_warmup": 0.1,
                     "center_momentum": 0.9, "momentum": 0.996}}


def objective(cfg):
    return DINO(build_encoder(cfg["backbone"]), **cfg["dino"])


if __name__ == "__main__":
    run_main(lambda argv: run_image_recipe(argv, DEFAULTS, multi_crop, objective))
