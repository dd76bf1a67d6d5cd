#!/usr/bin/env python
"""Image SSL on image shards: the method named by `objective` (mmssl.recipe_image).

    accelerate launch recipes/image_ssl.py --config recipes/configs/simclr_demo.yaml key=value ...
    accelerate launch recipes/image_ssl.py objective=byol data.train=MY_SHARDS
    python recipes/image_ssl.py objective=dino --help      # every key of that method

Methods: the modules of mmssl/objectives whose class declares `views` (simclr, moco, moco_v3, byol,
simsiam, barlow_twins, vicreg, nnclr, dino, swav, mae, rotation, jigsaw, supcon, ...).
"""
from mmssl.cli import run_main
from mmssl.recipe_image import run_image_ssl

if __name__ == "__main__":
    run_main(run_image_ssl)
