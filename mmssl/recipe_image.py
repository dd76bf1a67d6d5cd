"""What every image-only SSL recipe shares: config keys, the view fields, evaluation and saving.

A recipe (`recipes/simclr.py`, ...) names its objective and the fields it needs and calls
`run_image_recipe`: config -> data -> objective -> `mmssl.train.fit` -> `runs/<name>/encoder/`.
The trained backbone is evaluated during training with kNN and a linear probe on frozen features
(`eval_split` of `data.val`, with `eval_train_split` as the bank and training set), and saved
alone to `encoder/` (a transformers backbone loads with `AutoModel.from_pretrained`).
"""
from __future__ import annotations

from pathlib import Path

from .data import ImageField, LabelField, MultiCrop, TwoViews, build_loader, ssl_augment, train_transform
from .eval.backbone_model import BackboneEval
from .eval.tasks import run_tasks
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
# against stage 3, which left their kNN within about a point of random init (README, "Results
# table"). Three stages end on a 2x2 map, as CIFAR ResNets do (He et al. 2016, section 4.2).
RESNET_32PX = {**SMALL_RESNET,
               "config": {**SMALL_RESNET["config"], "depths": [1, 1, 1], "hidden_sizes": [64, 128, 256]}}

IMAGE_SSL_DEFAULTS = {
    **TRAIN_DEFAULTS,
    "data": {"train": "shards/fashion_mnist", "val": "shards/fashion_mnist", "shuffle_buffer": 1000},
    "image_size": 32,
    "backbone": RESNET_32PX,
    # Views: crop scale, colour-jitter strength, blur and solarize probabilities (BYOL's asymmetric
    # pair uses two values).
    "augment": {"scale_min": 0.2, "color": 1.0, "blur": 0.0, "solarize": 0.0, "local_size": 16, "n_local": 4,
                "local_scale_max": 0.4},
    "eval_tasks": ["knn", "linear"],
    "eval_split": "val",
    "eval_train_split": "train",
}


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

    cfg = from_cli(defaults, argv)
    accelerator = start(cfg)
    loader = build_loader(cfg["data"]["train"], fields(cfg), cfg["batch_size"], num_workers=cfg["num_workers"],
                          seed=cfg["seed"], shuffle_buffer=cfg["data"]["shuffle_buffer"])
    objective = build_objective(cfg)
    evaluate = None
    if cfg["data"]["val"]:
        def evaluate(model, step):
            out = run_tasks(BackboneEval(model.backbone), cfg["eval_tasks"], cfg["data"]["val"], cfg["eval_split"],
                            cfg["image_size"], batch_size=256, workers=0, train_split=cfg["eval_train_split"])
            return {**out, **(extra_eval(model, step, cfg) if extra_eval else {})}

    fit(accelerator, cfg, objective, loader, evaluate)
    if accelerator.is_main_process:
        objective.backbone.save_pretrained(Path(cfg["output_dir"]) / "encoder")
    return 0
