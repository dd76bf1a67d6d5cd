"""An image backbone as an evaluation model: kNN and linear probes on its pooled features."""
from __future__ import annotations

import torch
from torch import nn


class BackboneEval:
    """Adapts an encoder `[B,3,H,W] -> [B, D]` to the task interface of `eval.tasks` (knn, linear)."""

    def __init__(self, backbone: nn.Module):
        self.backbone = backbone

    @torch.no_grad()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        param = next(self.backbone.parameters(), None)  # a parameter-free baseline (raw pixels) stays on CPU
        return self.backbone(images.to(param.device) if param is not None else images)
