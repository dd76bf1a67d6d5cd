"""Rotation prediction: classify which of 0, 90, 180, 270 degrees an image was turned by.

Paper: Gidaris et al. 2018, "Unsupervised Representation Learning by Predicting Image Rotations",
https://arxiv.org/abs/1803.07728. As in the paper, every image appears in all four rotations in
the same batch. Images must be square.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..collapse import embedding_std
from ..models.heads import mlp


def rotations(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, C, S, S] -> ([4B, C, S, S] rotated by k * 90 degrees counter-clockwise, labels k [4B])."""
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"rotation prediction needs square images, got {tuple(images.shape[-2:])}")
    rotated = torch.cat([torch.rot90(images, k, dims=(2, 3)) for k in range(4)])
    labels = torch.arange(4, device=images.device).repeat_interleave(images.shape[0])
    return rotated, labels


class Rotation(nn.Module):
    """backbone `[B,3,S,S] -> [B, D]`; classifier MLP `D -> 4`; batch `image`.

    Args:
        hidden_dim: hidden width of the 4-way rotation classifier
    """

    views = "one_image"  # the batch it trains on: mmssl.recipe_image.VIEWS

    def __init__(self, backbone: nn.Module, hidden_dim: int = 512):
        super().__init__()
        self.backbone = backbone
        self.classifier = mlp(backbone.out_dim, hidden_dim, 4, layers=2)

    def forward(self, batch: dict, progress: float = 0.0) -> dict:
        x, y = rotations(batch["image"])
        feats = self.backbone(x)
        logits = self.classifier(feats)
        loss = F.cross_entropy(logits, y)
        return {"loss": loss, "accuracy": (logits.argmax(1) == y).float().mean(), "embed_std": embedding_std(feats)}
