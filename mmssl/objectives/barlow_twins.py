"""Barlow Twins: make the cross-correlation of two views' embeddings the identity.

Paper: Zbontar et al. 2021, "Barlow Twins: Self-Supervised Learning via Redundancy Reduction",
https://arxiv.org/abs/2103.03230. Embeddings are gathered from every rank with gradients, so the
batch standardisation and the cross-correlation are those of the global batch.

`per_view_bn` (default on) encodes each view in its own forward pass, as the paper's Algorithm 1
does, so every BatchNorm layer normalises a view with that view's statistics; off, the two views
go through as one batch and share them.
"""
from __future__ import annotations

import torch
from torch import nn

from .. import dist
from ..collapse import embedding_std
from ..losses import barlow_twins
from ..models.heads import mlp


class BarlowTwins(nn.Module):
    """backbone `[B,3,H,W] -> [B, D]`; 3-layer projector `-> proj_dim`; batch `views`.

    Args:
        proj_dim: projector output width (the cross-correlation is proj_dim x proj_dim)
        hidden_dim: hidden width of the 3-layer projector
        lambd: weight of the off-diagonal (redundancy) terms
        per_view_bn: encode each view alone, as the paper's Algorithm 1
    """

    views = "two_views"  # the batch it trains on: mmssl.recipe_image.VIEWS

    def __init__(self, backbone: nn.Module, proj_dim: int = 8192, hidden_dim: int = 8192, lambd: float = 5e-3,
                 per_view_bn: bool = True):
        super().__init__()
        self.backbone, self.lambd, self.per_view_bn = backbone, lambd, per_view_bn
        self.projector = mlp(backbone.out_dim, hidden_dim, proj_dim, layers=3)

    def forward(self, batch: dict, progress: float = 0.0) -> dict:
        v1, v2 = batch["views"][:2]
        batches = [v1, v2] if self.per_view_bn else [torch.cat([v1, v2])]
        z1, z2 = torch.cat([self.projector(self.backbone(x)) for x in batches]).chunk(2)
        loss = barlow_twins(dist.gather_with_grad(z1), dist.gather_with_grad(z2), self.lambd)
        return {"loss": loss, "embed_std": embedding_std(z1)}
