"""An image backbone as an evaluation model: kNN and linear probes on its pooled features.

With `stage`, the probes read an intermediate output of a transformers backbone instead of its
final pooled features: `hidden_states[stage]` (for a ResNet, 0 is the stem and k the output of
stage k; for a ViT, 0 is the patch embedding and k the output of block k), averaged over space or
tokens. Layer-wise probing is how SSL papers locate where a pretext task's features are best
(Goyal et al. 2019, https://arxiv.org/abs/1905.01235): the top layers specialise to the
pretraining loss, and on a small input they may see a 1x1 map only.
"""
from __future__ import annotations

import torch
from torch import nn

from ..models.encoders import EncoderSpecError


class BackboneEval:
    """Adapts an encoder `[B,3,H,W] -> [B, D]` to the task interface of `eval.tasks` (knn, linear)."""

    def __init__(self, backbone: nn.Module, stage: int | None = None):
        if stage is not None:
            config = getattr(getattr(backbone, "model", None), "config", None)
            if config is None or getattr(backbone, "modality", None) != "image":
                raise EncoderSpecError(f"stage {stage}: only a transformers image backbone exposes its stages, "
                                       f"not {type(backbone).__name__}")
            count = len(getattr(config, "depths", ())) or getattr(config, "num_hidden_layers", 0)
            if not 0 <= stage <= count:
                raise EncoderSpecError(f"stage {stage} does not exist: {type(backbone.model).__name__} has stages 0 "
                                       f"(stem) to {count}")
        self.backbone, self.stage = backbone, stage

    @torch.no_grad()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        param = next(self.backbone.parameters(), None)  # a parameter-free baseline (raw pixels) stays on CPU
        images = images.to(param.device) if param is not None else images
        if self.stage is None:
            return self.backbone(images)
        hidden = self.backbone.model(pixel_values=images, output_hidden_states=True).hidden_states[self.stage]
        return hidden.mean(dim=(2, 3)) if hidden.ndim == 4 else hidden.mean(1)  # [B,C,H,W] or [B,T,D] -> [B, D]
