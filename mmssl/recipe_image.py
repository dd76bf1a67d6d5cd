"""The one driver of every image-only SSL method: `recipes/image_ssl.py`.

`objective: NAME` picks the method: the class in `mmssl/objectives/NAME.py` that declares `views`,
the batch it trains on (a key of VIEWS). Its constructor's arguments after the backbone are the
`NAME.*` config keys (mmssl.config.constructor_keys), so a new image method is its objective file
and a config: config -> data -> objective -> `mmssl.train.fit` -> `runs/<name>/encoder/`.
The trained backbone is evaluated during training with kNN and a linear probe on frozen features
(`eval_split` of `data.val`, with `eval_train_split` as the bank and training set), and saved
alone to `encoder/` (a transformers backbone loads with `AutoModel.from_pretrained`). An
objective with a `reconstruction_grid(images)` method (MAE) also draws held-out images at each
evaluation (`reconstructions/step_XXXXXXX.png`); one with a `default_backbone` spec (MAE: its ViT)
gets it as the `backbone` default.
"""
from __future__ import annotations

import importlib
import inspect
from pathlib import Path

from .config import ConfigError, Key, chosen, constructor_keys, set_defaults
from .data import (ImageField, LabelField, MultiCrop, TwoViews, build_loader, eval_transform, ssl_augment, train_transform,
                   training_loader)
from .data.device_augment import DeviceAugment, load_transform
from .data.device_decode import DeviceDecode, EncodedJpegField
from .eval.backbone_model import BackboneEval
from .eval.tasks import run_tasks
from .models.encoders import build_encoder, save_image_processor
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
    "objective": Key("simclr", "the image SSL method: a module of mmssl/objectives whose class declares `views`"),
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
                "local_scale_max": Key(0.4, "largest local crop, as a share of the image area", above=0),
                "on": Key("workers", "where the two views are augmented: in the data workers, image by image, or on "
                          "the training device, the whole batch at once (GPU-side; mmssl.data.device_augment)",
                          choices=("workers", "device")),
                "load_size": Key(0, "with augment.on=device: side of the square each image is resized and centre-"
                                 "cropped to in the workers (0: image_size / 0.875)", min=0),
                "decode": Key("workers", "with augment.on=device: where plain JPEGs (8-bit RGB or grey) are decoded "
                              "and resized: in the data workers, or on the training device, the whole batch in one "
                              "call (torchvision.io.decode_jpeg, nvJPEG on a GPU; mmssl.data.device_decode); other "
                              "images are decoded in the workers", choices=("workers", "device"))},
    "eval_tasks": Key(["knn", "linear"], "evaluations of the frozen backbone (those needing labels run only "
                      "where the data has labels)", choices=("knn", "linear")),
    "eval_split": Key("val", "held-out split of data.val that is scored"),
    "eval_train_split": Key("train", "split of data.val the kNN bank and the linear probe train on"),
})


def two_views(cfg: dict) -> list:
    """`views`: two SimCLR-style augmentations of each image (with augment.on=device, `image`: the
    square the device augments, `device_views`)."""
    a = cfg["augment"]
    if a["on"] == "device" and a["decode"] == "device":
        return [EncodedJpegField(load_size(cfg))]
    if a["on"] == "device":
        return [ImageField(load_transform(load_size(cfg)))]
    t = ssl_augment(cfg["image_size"], (a["scale_min"], 1.0), blur=a["blur"], solarize=a["solarize"], color=a["color"])
    return [ImageField(TwoViews(t), out_key="views")]


def load_size(cfg: dict) -> int:
    """With augment.on=device: the side of the squares the device augments."""
    return cfg["augment"]["load_size"] or round(cfg["image_size"] / 0.875)


def device_views(cfg: dict, device=None, count_skipped=None):
    """With augment.on=device, fit's `on_device`: the batch's `image` squares (with
    augment.decode=device, its JPEGs, decoded first on `device`; images no decoder reads are counted
    with `count_skipped(reason, n)`) become its two `views` on the device; otherwise None."""
    a = cfg["augment"]
    if a["on"] != "device":
        return None
    augment = DeviceAugment(cfg["image_size"], (a["scale_min"], 1.0), blur=a["blur"], solarize=a["solarize"],
                            color=a["color"])
    decode = DeviceDecode(load_size(cfg), device or "cpu", count_skipped) if a["decode"] == "device" else None

    def on_device(batch: dict, seed: int) -> dict:
        batch = dict(batch)
        images = batch.pop("image")
        batch["views"] = augment(decode(images) if decode is not None else images, seed)
        return batch

    return on_device


def multi_crop(cfg: dict) -> list:
    """`views`: 2 global crops then `n_local` small ones (DINO, SwAV)."""
    a = cfg["augment"]
    crops = MultiCrop(cfg["image_size"], a["local_size"], 2, a["n_local"], global_scale=(a["scale_min"], 1.0),
                      local_scale=(0.05, a["local_scale_max"]), color=a["color"], blur=a["blur"], solarize=a["solarize"])
    return [ImageField(crops, out_key="views")]


def one_image(cfg: dict) -> list:
    """`image`: one random crop and flip (MAE, rotation, jigsaw make their own inputs from it)."""
    return [ImageField(train_transform(cfg["image_size"], scale=(cfg["augment"]["scale_min"], 1.0)))]


def labelled_views(cfg: dict) -> list:
    """`views`: two SimCLR-style augmentations of each image, and its `label` (SupCon)."""
    return two_views(cfg) + [LabelField()]


# What an objective's `views` attribute names: the fields its batches are built from.
VIEWS = {"two_views": two_views, "multi_crop": multi_crop, "one_image": one_image, "labelled_views": labelled_views}
# The augment keys each kind of views reads; the user setting another is told it does nothing.
TWO_VIEWS_READ = {"scale_min", "color", "blur", "solarize", "on", "load_size", "decode"}
AUGMENT_READ = {"two_views": TWO_VIEWS_READ, "labelled_views": TWO_VIEWS_READ,
                "multi_crop": {"scale_min", "color", "blur", "solarize", "local_size", "n_local", "local_scale_max"},
                "one_image": {"scale_min"}}


def check_augment(cfg: dict, views: str) -> None:
    """ConfigError for an `augment.*` key the user set that this method's views never read."""
    unread = sorted(k for k in getattr(cfg, "explicit", ()) if k.startswith("augment.")
                    and k.split(".", 1)[1] not in AUGMENT_READ[views])
    if unread:
        raise ConfigError(f"{unread[0]} does nothing for {cfg['objective']} ({views}: it reads augment."
                          f"{', augment.'.join(sorted(AUGMENT_READ[views]))}); remove it")
    for key in ("load_size", "decode"):
        if f"augment.{key}" in getattr(cfg, "explicit", ()) and cfg["augment"]["on"] != "device":
            raise ConfigError(f"augment.{key} does nothing with augment.on=workers (the workers decode, crop and "
                              "augment each image); set augment.on=device or remove it")


def _methods_in(module) -> list[type]:
    """The classes defined in `module` that declare the views they train on."""
    return [c for c in vars(module).values() if isinstance(c, type) and c.__module__ == module.__name__
            and getattr(c, "views", None) in VIEWS]


def objective_class(name: str) -> type:
    """The class of `mmssl/objectives/<name>.py` that declares `views`; ConfigError if there is none."""
    try:
        found = _methods_in(importlib.import_module(f"mmssl.objectives.{name}"))
    except ModuleNotFoundError as exn:
        if exn.name != f"mmssl.objectives.{name}":
            raise  # the module exists; something it imports is missing
        found = []
    if len(found) != 1:
        raise ConfigError(f"objective '{name}' is not an image SSL method (choose from {', '.join(image_objectives())})")
    return found[0]


def image_objectives() -> tuple[str, ...]:
    """Every `mmssl/objectives` module that holds an image SSL method, by name."""
    paths = sorted((Path(__file__).parent / "objectives").glob("*.py"))
    return tuple(p.stem for p in paths if _methods_in(importlib.import_module(f"mmssl.objectives.{p.stem}")))


def image_defaults(name: str) -> dict:
    """Every config key of method `name`: the shared ones and its constructor's, under `name`."""
    cls = objective_class(name)
    keys = {"objective": Key(name, IMAGE_SSL_DEFAULTS["objective"].help, choices=image_objectives()),
            "output_dir": f"runs/{name}", name: constructor_keys(cls)}
    if hasattr(cls, "default_backbone"):
        keys["backbone"] = cls.default_backbone
    if hasattr(cls, "reconstruction_grid"):
        keys["reconstructions"] = Key(8, "held-out images in each evaluation's reconstruction picture", min=0)
    return set_defaults(IMAGE_SSL_DEFAULTS, keys)


def build_objective(cfg: dict):
    """The configured method around the configured backbone; a bad combination is a ConfigError."""
    name = cfg["objective"]
    backbone = build_encoder(cfg["backbone"])
    own = getattr(backbone, "config", None)  # mmssl's own encoders keep their constructor arguments
    size = own.get("image_size") if isinstance(own, dict) else None
    if size is not None and size != cfg["image_size"]:
        raise ConfigError(f"backbone.config.image_size is {size} but image_size is {cfg['image_size']}; make them equal")
    cls = objective_class(name)
    # A method whose decoder is sized by the input (the context encoder) asks for image_size.
    sized = {"image_size": cfg["image_size"]} if "image_size" in inspect.signature(cls).parameters else {}
    try:
        return cls(backbone, **sized, **cfg[name])
    except ValueError as exn:
        raise ConfigError(f"{name}: {exn}") from None


def save_reconstructions(model, step: int, cfg: dict) -> dict:
    """A PNG of `reconstructions` held-out images: original | masked | reconstruction per row."""
    from PIL import Image

    from .data.image import tensor_to_pil

    loader = build_loader(cfg["data"]["val"], [ImageField(eval_transform(cfg["image_size"]))], cfg["reconstructions"],
                          split=cfg["eval_split"], shuffle=False, drop_last=False, num_workers=0, rank=0, world_size=1)
    images = next(iter(loader))["image"].to(next(model.parameters()).device)
    rows = [tensor_to_pil(r) for r in model.reconstruction_grid(images)]
    sheet = Image.new("RGB", (rows[0].width, rows[0].height * len(rows)))
    for i, r in enumerate(rows):
        sheet.paste(r, (0, i * r.height))
    scale = max(1, 96 // rows[0].height)
    sheet = sheet.resize((sheet.width * scale, sheet.height * scale), Image.NEAREST)
    out = Path(cfg["output_dir"]) / "reconstructions" / f"step_{step:07d}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return {"reconstructions": str(out)}


def run_image_ssl(argv=None) -> int:
    """`recipes/image_ssl.py [--config FILE] [key=value ...]`: train the configured method."""
    from .config import from_cli
    from .preflight import check_training_data, plan_eval

    name = chosen(argv, "objective", IMAGE_SSL_DEFAULTS["objective"].default)
    defaults = image_defaults(name)
    cfg = from_cli(defaults, argv, title=f"recipes/image_ssl.py objective={name}: every config key")
    check_training_data(cfg)
    tasks = plan_eval(cfg, (cfg["eval_split"], cfg["eval_train_split"]))
    objective = build_objective(cfg)
    check_augment(cfg, objective.views)
    pictures = cfg.get("reconstructions", 0) > 0 and bool(cfg["data"]["val"])
    accelerator = start(cfg)
    loader = training_loader(cfg, VIEWS[objective.views](cfg))
    evaluate = None
    if cfg["data"]["val"] and (tasks or pictures):
        def evaluate(model, step):
            out = run_tasks(BackboneEval(model.backbone), tasks, cfg["data"]["val"], cfg["eval_split"],
                            cfg["image_size"], batch_size=256, workers=0, train_split=cfg["eval_train_split"])
            return {**out, **(save_reconstructions(model, step, cfg) if pictures else {})}

    fit(accelerator, cfg, objective, loader, evaluate,
        preprocessors={"": lambda d: save_image_processor(d, cfg["image_size"])},
        on_device=device_views(cfg, accelerator.device, loader.count_skipped))
    return 0
