"""Fine-tuning evaluation: a run's saved encoder trained end to end with a fresh linear head.

    python -m mmssl.eval RUN --task finetune --data DIR [--label-fraction 0.01] [--seed 0] [--init random] [key=value ...]

The labelled set is a class-balanced share of `DIR`'s train split: the same number of samples from
every class (`label_fraction` of the split, divided by the number of classes, at least one), drawn
with `seed`. Where it is less than the whole split it is copied into the fine-tuning run folder
(`subset/`, a make_shards folder) and its keys listed in `labelled_keys.txt`, so the result can be
reproduced and the subset reused. Training goes through `mmssl.train.fit` (checkpoints, resume,
progress bar, one or several processes); the end is scored on the held-out split: top-1, and top-5
where there are more than 5 classes.

`init: random` builds the same architecture with fresh weights: the supervised baseline on the same
labels and schedule. Masked models (MAE, VideoMAE) are evaluated this way in their papers; a frozen
linear probe undersells them.

The run's modality follows its config: images (`image_size`), clips (`num_frames`, or CPC's
`input: video`) or waveforms (CPC's `input: audio`). What the head reads:
- image encoders: their pooled features;
- VideoMAE: the mean of its (final-LayerNorm) tokens, as the paper's fine-tuning does;
- frame encoders (temporal order, RGB-flow): `eval_frames` evenly spaced frames, concatenated in order;
- CPC's waveform encoder: z averaged over the steps that hold signal.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from ..config import ConfigError, Key, set_defaults
from ..train import TRAIN_DEFAULTS

# The data come from --data (and the subset drawn from it), so TRAIN_DEFAULTS' data.* keys are not offered.
FINETUNE_DEFAULTS = set_defaults({k: v for k, v in TRAIN_DEFAULTS.items() if k != "data"}, {
    "output_dir": Key("", "fine-tuning run folder ('': RUN/finetune/<init>_<label_fraction>_seed<seed>)"),
    "init": Key("run", "run: the run's saved encoder; random: the same architecture freshly initialised "
                       "(the supervised baseline)", choices=("run", "random")),
    "label_fraction": Key(1.0, "share of the train split's labels used, the same number from every class", above=0),
    "train_split": Key("train", "split of --data the labelled subset is drawn from"),
    "label_smoothing": Key(0.1, "label smoothing of the cross-entropy", min=0),
    "encoder_lr_scale": Key(1.0, "the encoder's learning rate as a share of lr (the head's); below 1 moves a "
                                 "pretrained encoder less", above=0),
    "head_init": Key("random", "random: a freshly drawn head; probe: the head starts as a linear probe fitted, on the "
                               "fine-tuning's loss, to the frozen encoder's features of the labelled samples (LP-FT, "
                               "Kumar et al. 2022, https://arxiv.org/abs/2202.10054), so early steps do not send a "
                               "random head's errors into a pretrained encoder", choices=("random", "probe")),
    "crop_scale_min": Key(0.2, "images: smallest random crop in training, as a share of the image area (1: the whole "
                               "image, flipped at random)", above=0),
    "max_steps": 300,
    "batch_size": 64,
    "lr": 5e-4,
    "warmup_steps": 30,
    "save_every": 0,
    "log_every": 20,
    "tensorboard": False,
    "num_workers": 2,
    "shuffle_buffer": TRAIN_DEFAULTS["data"]["shuffle_buffer"],
})


class Classifier(nn.Module):
    """features: batch -> [B, D]; a fresh linear head -> logits [B, classes]; cross-entropy on `label`.
    The encoder learns at `encoder_lr_scale` times the head's rate."""

    def __init__(self, features: nn.Module, dim: int, classes: int, label_smoothing: float = 0.0,
                 encoder_lr_scale: float = 1.0):
        super().__init__()
        self.features, self.head, self.label_smoothing = features, nn.Linear(dim, classes), label_smoothing
        self.lr_multipliers = {"features": encoder_lr_scale}  # read by mmssl.train.fit

    def logits(self, batch: dict) -> torch.Tensor:
        return self.head(self.features(batch))

    def forward(self, batch: dict, progress: float = 0.0) -> dict:
        logits = self.logits(batch)
        return {"loss": F.cross_entropy(logits, batch["label"], label_smoothing=self.label_smoothing),
                "acc": (logits.argmax(1) == batch["label"]).float().mean()}

    def save_pretrained(self, directory) -> None:
        """The fine-tuned encoder in its own format (as the run's `encoder/`) and `head.safetensors`."""
        from safetensors.torch import save_file

        self.features.encoder.save_pretrained(directory)
        save_file({k: v.contiguous() for k, v in self.head.state_dict().items()}, str(Path(directory) / "head.safetensors"))


class ImageInput(nn.Module):
    """`image` [B, 3, H, W] -> encoder features [B, D]."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder, self.out_dim = encoder, encoder.out_dim

    def forward(self, batch: dict) -> torch.Tensor:
        return self.encoder(batch["image"])


class FramesInput(nn.Module):
    """`video` [B, T, C, H, W] -> [B, frames * D]: evenly spaced frames through a frame encoder, in order."""

    def __init__(self, encoder: nn.Module, frames: int):
        super().__init__()
        self.encoder, self.frames, self.out_dim = encoder, frames, frames * encoder.out_dim

    def forward(self, batch: dict) -> torch.Tensor:
        from ..objectives.frame_tuples import ordered_frame_features

        return ordered_frame_features(self.encoder, batch["video"], self.frames)


class TokensInput(nn.Module):
    """`video` [B, T, C, H, W] -> [B, D]: the mean of a `VideoMAEModel`'s tokens."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder, self.out_dim = encoder, encoder.config.hidden_size

    def forward(self, batch: dict) -> torch.Tensor:
        return self.encoder(batch["video"]).last_hidden_state.mean(1)


class WaveInput(nn.Module):
    """`audio` [B, samples] (and `audio_samples` [B], the real ones) -> [B, D]: the encoder's
    sequence averaged over the steps that end within the sound."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder, self.out_dim = encoder, encoder.out_dim

    def forward(self, batch: dict) -> torch.Tensor:
        seq = self.encoder.sequence(batch["audio"])
        ends = (torch.arange(seq.shape[1], device=seq.device) + 1) * self.encoder.hop
        valid = (ends.unsqueeze(0) <= batch["audio_samples"].unsqueeze(1)).unsqueeze(-1).to(seq.dtype)
        return (seq * valid).sum(1) / valid.sum(1).clamp(min=1)


def modality(cfg: dict) -> str:
    """image | video | audio, from the keys of a run's config.yaml."""
    if cfg.get("input") in ("audio", "video"):
        return cfg["input"]
    if "num_frames" in cfg:
        return "video"
    if "image_size" in cfg:
        return "image"
    raise ConfigError("this run's config names no image_size, num_frames or input: cannot tell what its encoder reads")


def fresh(encoder: nn.Module) -> nn.Module:
    """The same architecture with new weights, initialised as its own constructor does."""
    from transformers import AutoModel, PreTrainedModel

    from ..models.colour import LightnessEncoder
    from ..models.encoders import EncoderSpecError, HFEncoder, TorchvisionEncoder

    if isinstance(encoder, LightnessEncoder):
        return LightnessEncoder(fresh(encoder.encoder))
    if isinstance(encoder, TorchvisionEncoder):
        return TorchvisionEncoder(encoder.name)
    if isinstance(encoder, HFEncoder):
        return HFEncoder(AutoModel.from_config(encoder.model.config), encoder.modality, encoder.pooling)
    if isinstance(encoder, PreTrainedModel):
        return type(encoder)(encoder.config)
    if isinstance(getattr(encoder, "config", None), dict):  # mmssl's own ViT and audio encoders
        return type(encoder)(**encoder.config)
    raise EncoderSpecError(f"cannot build a freshly initialised {type(encoder).__name__}")


def load_input(run_dir: Path, cfg: dict, init: str) -> nn.Module:
    """The run's encoder (or a fresh copy with init='random') behind the batch adapter of its modality."""
    folder = run_dir / "encoder"
    if (folder / "heads.safetensors").exists() or (folder / "visual").is_dir():
        raise ConfigError(f"{run_dir} saved a two-tower model; --task finetune takes a run with one encoder")
    kind = modality(cfg)
    hf_type = json.loads((folder / "config.json").read_text()).get("model_type") \
        if (folder / "config.json").exists() else None
    if hf_type == "videomae":
        from transformers import VideoMAEModel

        encoder = VideoMAEModel.from_pretrained(str(folder), use_safetensors=True)
    else:
        from ..models.encoders import build_encoder

        encoder = build_encoder({"name": str(folder), "modality": "audio" if kind == "audio" else "image"})
    if init == "random":
        encoder = fresh(encoder)
    if hf_type == "videomae":
        return TokensInput(encoder)
    if kind == "video":
        frames = next((v["eval_frames"] for v in cfg.values() if isinstance(v, dict) and "eval_frames" in v), 4)
        return FramesInput(encoder, frames)
    if kind == "audio":
        if not hasattr(encoder, "sequence"):
            raise ConfigError(f"{folder} holds an audio encoder without a time sequence; fine-tuning reads wave_encoder")
        return WaveInput(encoder)
    return ImageInput(encoder)


def eval_resize(size: int, crop_scale_min: float) -> int:
    """The shorter side an image is resized to before the evaluation's centre crop of `size`."""
    return round(size / max(0.875, crop_scale_min ** 0.5))


def input_field(cfg: dict, train: bool, crop_scale_min: float = FINETUNE_DEFAULTS["crop_scale_min"].default):
    """The field that feeds the run's encoder: its own sizes, with the weak augmentation (random
    crop of at least `crop_scale_min` of the area and flip, random clip start) in training and
    centre crops for evaluation. The evaluation crop zooms in by 1 / 0.875 as usual, or less where
    the training crops never zoom that far (1 / sqrt(crop_scale_min)): with crop_scale_min = 1 the
    model is scored on the whole image it trained on."""
    from ..data import AudioField, ImageField, VideoField, eval_transform, train_transform

    kind = modality(cfg)
    if kind == "image":
        size = cfg["image_size"]
        if train:
            return ImageField(train_transform(size, scale=(crop_scale_min, 1.0)))
        return ImageField(eval_transform(size, resize=eval_resize(size, crop_scale_min)))
    if kind == "video":
        v = cfg["video"] if cfg.get("input") == "video" else cfg
        return VideoField(v["num_frames"], v["stride"], v["image_size"], train=train)
    a = cfg["audio"]
    return AudioField(a["sample_rate"], a["seconds"], train=train, min_seconds=a.get("min_seconds", 0.1),
                      trim_db=a.get("trim_db"))


@torch.no_grad()
def top_k(logits, device, data: str, split: str, field, batch_size: int, classes: int) -> dict:
    """Score a classifier, `logits(batch) -> [B, classes]` with its weights on `device`, on every
    sample of `data:split` (read through `field` and the labels): `top1`, `top5` where there are
    more than 5 classes, `eval_samples`."""
    from ..data import LabelField, build_loader

    ev = build_loader(data, [field, LabelField()], batch_size, split=split, shuffle=False, drop_last=False,
                      num_workers=0, rank=0, world_size=1)
    top1 = top5 = n = 0
    for batch in ev:
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        out, y = logits(batch), batch["label"]
        top1 += int((out.argmax(1) == y).sum())
        top5 += int((out.topk(min(5, classes), 1).indices == y.unsqueeze(1)).any(1).sum())
        n += len(y)
    return {"top1": top1 / n, **({"top5": top5 / n} if classes > 5 else {}), "eval_samples": n}


def classifier(run_dir: Path, run_cfg: dict, cfg: dict, classes: int) -> Classifier:
    """The run's encoder (or, with init=random, a fresh one) and a fresh head, their new weights drawn
    from `cfg['seed']` alone: the same seed starts every fine-tuning run from the same weights, the
    baseline's seeds differ in initialisation as well as in labels, and at one seed the pretrained
    and the random-init run start from the same head."""
    from accelerate.utils import set_seed

    set_seed(cfg["seed"])
    features = load_input(run_dir, run_cfg, cfg["init"])
    set_seed(cfg["seed"])  # loading a saved encoder draws fewer numbers than building a fresh one
    return Classifier(features, features.out_dim, classes, cfg["label_smoothing"], cfg["encoder_lr_scale"])


def probed_head(model: Classifier, labelled, field, cfg: dict, device) -> None:
    """Replace `model.head` by a linear probe on the frozen encoder's features of every labelled sample
    (evaluation preprocessing, eval mode). Every process computes the same head from the same samples."""
    from ..data import LabelField, build_loader
    from .features import extract
    from .linear_probe import probe_head

    loader = build_loader(labelled.source, [field, LabelField()], cfg["batch_size"], split=labelled.split,
                          shuffle=False, drop_last=False, num_workers=0, rank=0, world_size=1)
    model.to(device).eval()
    feats = extract(loader, model.features, device)
    model.train()
    head = probe_head(feats["features"], feats["label"], model.head.out_features, seed=cfg["seed"],
                      label_smoothing=model.label_smoothing)
    model.head.load_state_dict(head.state_dict())


def finetune(run_dir: Path, data: str, split: str, overrides: list[str]) -> tuple[dict, bool]:
    """Fine-tune the encoder of `run_dir` on a labelled share of `data` and score `split`; -> (metrics,
    whether this is the main process, which alone holds the scores)."""
    from ..config import merge
    from ..data import LabelField, build_loader
    from ..data.subset import LabelledSubset
    from ..models.encoders import save_image_processor
    from ..preflight import check_source, has_labels
    from ..train import fit, start

    run_cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg = merge(FINETUNE_DEFAULTS, None, overrides)
    for key in ("label_fraction", "crop_scale_min"):
        if cfg[key] > 1:
            raise ConfigError(f"{key} must be at most 1, got {cfg[key]}")
    sources = [check_source(data, s, "--data")[0] for s in (cfg["train_split"], split)]
    for s, source in zip((cfg["train_split"], split), sources):
        if not has_labels(source):
            raise ConfigError(f"--task finetune needs labels, and {data}:{s} has none (no cls members)")
    if set(sources[0].urls) & set(sources[1].urls):  # a folder of tars whose names hold no split
        raise ConfigError(f"{data} has no held-out split apart from '{cfg['train_split']}': scores on the samples "
                          "fine-tuning trains on would mean nothing; shard it with tools/make_shards.py (it holds out "
                          "10% as val) or name split-marked shards (train-*.tar, val-*.tar)")
    tag = f"{cfg['init']}_{cfg['label_fraction']:g}_seed{cfg['seed']}"
    cfg["output_dir"] = cfg["output_dir"] or str(run_dir / "finetune" / tag)
    labelled = LabelledSubset(data, cfg["train_split"], cfg["label_fraction"], cfg["seed"], Path(cfg["output_dir"]))
    classes, chosen = labelled.classes, labelled.keys
    if len(chosen) < cfg["batch_size"]:
        print(f"{len(chosen)} labelled samples, fewer than batch_size={cfg['batch_size']}: batch_size={len(chosen)}")
        cfg["batch_size"] = len(chosen)
    model = classifier(run_dir, run_cfg, cfg, classes)
    accelerator = start(cfg)
    if accelerator.is_main_process:
        labelled.write(cfg["resume"])
    accelerator.wait_for_everyone()
    # Each worker fills whole batches from its own piece: a small subset gets fewer workers.
    workers = min(cfg["num_workers"], max(1, len(chosen) // cfg["batch_size"]))
    train_field = input_field(run_cfg, True, cfg["crop_scale_min"])
    loader = build_loader(labelled.source, [train_field, LabelField()], cfg["batch_size"],
                          split=labelled.split, num_workers=workers, seed=cfg["seed"], shuffle_buffer=cfg["shuffle_buffer"])

    if cfg["head_init"] == "probe":
        probed_head(model, labelled, input_field(run_cfg, False, cfg["crop_scale_min"]), cfg, accelerator.device)

    def evaluate(m: Classifier, step: int) -> dict:
        field = input_field(run_cfg, False, cfg["crop_scale_min"])
        scores = top_k(m.logits, next(m.parameters()).device, data, split, field, cfg["batch_size"], classes)
        return {f"finetune_{k}": v for k, v in scores.items()}

    # The fine-tuned encoder is saved with the image processor of the framing it was scored with.
    size = run_cfg.get("image_size") if modality(run_cfg) == "image" else None
    saved = {"": lambda d: save_image_processor(d, size, eval_resize(size, cfg["crop_scale_min"]))} if size else {}
    result = fit(accelerator, cfg, model, loader, evaluate, preprocessors=saved)
    return {"init": cfg["init"], "label_fraction": cfg["label_fraction"], "seed": cfg["seed"],
            "labelled": len(chosen), "classes": classes, "steps": cfg["max_steps"],
            "finetune_dir": cfg["output_dir"], **result}, accelerator.is_main_process
