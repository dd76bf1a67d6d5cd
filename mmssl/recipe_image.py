"""What every image-only SSL recipe shares: config keys, the view fields, evaluation and saving.

A recipe (`recipes/simclr.py`, ...) names its objective and the fields it needs and calls
`run_image_recipe`: config -> data -> objective -> `mmssl.train.fit` -> `runs/<name>/encoder/`.
The trained backbone is evaluated during training with kNN and a linear probe on frozen features
(`eval_split` of `data.val`, with `eval_train_split` as the bank and training set), and saved
alone to `encoder/` (a transformers backbone loads with `AutoModel.from_pretrained`).
"""
from __future__ import annotations

import sys
from pathlib import Path

from .data import ImageField, LabelField, MultiCrop, TwoViews, build_loader, ssl_augment, train_transform
from .eval.backbone_model import BackboneEval
from .eval.tasks import run_tasks
from .models.encoders import save_image_processor
from .config import Key, set_defaults
from .train import TRAIN_DEFAULTS, fit, start

# A small ResNet (transformers' ResNet, one basic block per stage) for CPU runs; the GPU configs
# replace it with ResNet-50 or a ViT. The video and audio-visual recipes use it at 64 px.
SMALL_RESNET = {"name": "resnet", "modality": "image", "pretrained": False, "freeze": False, "pooling": "pooler",
                "config": {"model_type": "resnet", "layer_type": "basic", "depths": [1, 1, 1, 1],
                           "hidden_sizes": [64, 128, 256, 512], "embedding_size": 32},
                "trust_remote_code": False}
# The image SSL demos' backbone: the same ResNet without its last stage. transformers' ResNet keeps
# the ImageNet stem (stride 4), so at 32 px a fourth stage sees a 1x1 map, where its convolutions
# act as one more projector layer: trained by BYOL, Barlow Twins or jigsaw it lost 2 to 3 kNN points
# against stage 3, which left their kNN within about a point of random init (docs/images.md, "Results
# table"). Three stages end on a 2x2 map, as CIFAR ResNets do (He et al. 2016, section 4.2).
RESNET_32PX = {**SMALL_RESNET,
               "config": {**SMALL_RESNET["config"], "depths": [1, 1, 1], "hidden_sizes": [64, 128, 256]}}

IMAGE_SSL_DEFAULTS = set_defaults(TRAIN_DEFAULTS, {
    "data": {"train": "shards/fashion_mnist", "val": "shards/fashion_mnist"},
    "image_size": Key(32, "side of the square crops the backbone sees", min=8),
    # The backbone spec is free-form (a torchvision name, a Hub id, a folder or a transformers config).
    "backbone": Key(RESNET_32PX, "backbone spec (mmssl.models.encoders.build_encoder)"),
    "augment": {"scale_min": Key(0.2, "smallest crop, as a share of the image area", above=0),
                "color": Key(1.0, "colour-jitter strength (0 disables)", min=0),
                "blur": Key(0.0, "probability of Gaussian blur", min=0),
                "solarize": Key(0.0, "probability of solarization", min=0),
                "local_size": Key(16, "side of multi-crop local views (DINO, SwAV)", min=1),
                "n_local": Key(4, "local views per image (DINO, SwAV)", min=0),
                "local_scale_max": Key(0.4, "largest local crop, as a share of the image area", above=0)},
    "eval_tasks": Key(["knn", "linear"], "evaluations of the frozen backbone (those needing labels run only "
                      "where the data has labels)", choices=("knn", "linear")),
    "eval_split": Key("val", "held-out split of data.val that is scored"),
    "eval_train_split": Key("train", "split of data.val the kNN bank and the linear probe train on"),
})


def two_views(cfg: dict) -> list:
    """`views`: two SimCLR-style augmentations of each image."""
    a = cfg["augment"]
    t = ssl_augment(cfg["image_size"], (a["scale_min"], 1.0), blur=a["blur"], solarize=a["solarize"], color=a["color"])
    return [ImageField(TwoViews(t), out_key="views")]


def multi_crop(cfg: dict) -> list:
    """`views`: 2 global crops then `n_local` small ones (DINO, SwAV)."""
    a = cfg["augment"]
    crops = MultiCrop(cfg["image_size"], a["local_size"], 2, a["n_local"], global_scale=(a["scale_min"], 1.0),
                      local_scale=(0.05, a["local_scale_max"]), color=a["color"])
    return [ImageField(crops, out_key="views")]


def one_image(cfg: dict) -> list:
    """`image`: one random crop and flip (MAE, rotation, jigsaw make their own inputs from it)."""
    return [ImageField(train_transform(cfg["image_size"], scale=(cfg["augment"]["scale_min"], 1.0)))]


def with_labels(fields):
    """Wrap a field builder so batches also carry `label` (SupCon)."""
    def build(cfg: dict) -> list:
        return fields(cfg) + [LabelField()]
    return build


def run_image_recipe(argv, defaults: dict, fields, build_objective, extra_eval=None) -> int:
    """fields(cfg) -> [Field]; build_objective(cfg) -> objective with `.backbone`;
    extra_eval(objective, step, cfg) -> dict adds to each evaluation (MAE's reconstructions)."""
    from .config import from_cli
    from .preflight import check_training_data, plan_eval

    cfg = from_cli(defaults, argv, title=f"{Path(sys.argv[0]).name}: every config key")
    check_training_data(cfg)
    tasks = plan_eval(cfg, (cfg["eval_split"], cfg["eval_train_split"]))
    objective = build_objective(cfg)
    accelerator = start(cfg)
    loader = build_loader(cfg["data"]["train"], fields(cfg), cfg["batch_size"], num_workers=cfg["num_workers"],
                          seed=cfg["seed"], shuffle_buffer=cfg["data"]["shuffle_buffer"])
    evaluate = None
    if cfg["data"]["val"] and (tasks or extra_eval):
        def evaluate(model, step):
            out = run_tasks(BackboneEval(model.backbone), tasks, cfg["data"]["val"], cfg["eval_split"],
                            cfg["image_size"], batch_size=256, workers=0, train_split=cfg["eval_train_split"])
            return {**out, **(extra_eval(model, step, cfg) if extra_eval else {})}

    fit(accelerator, cfg, objective, loader, evaluate)
    if accelerator.is_main_process:
        objective.backbone.save_pretrained(Path(cfg["output_dir"]) / "encoder")
        save_image_processor(Path(cfg["output_dir"]) / "encoder", cfg["image_size"])
    return 0
