"""VICReg: variance, invariance and covariance regularisation of two views' embeddings.

Paper: Bardes et al. 2022, "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning", https://arxiv.org/abs/2105.04906. Embeddings are gathered from every rank
with gradients, so variance and covariance are those of the global batch.
"""
from __future__ import annotations

import torch
from torch import nn

from .. import dist
from ..collapse import embedding_std
from ..losses import vicreg
from ..models.heads import mlp


class VICReg(nn.Module):
    """backbone `[B,3,H,W] -> [B, D]`; 3-layer expander `-> proj_dim`; batch `views`.

    Args:
        proj_dim: projector output width
        hidden_dim: hidden width of the 3-layer projector
        sim_weight: weight of the invariance (MSE) term
        var_weight: weight of the variance term
        cov_weight: weight of the covariance term
    """

    views = "two_views"  # the batch it trains on: mmssl.recipe_image.VIEWS

    def __init__(self, backbone: nn.Module, proj_dim: int = 8192, hidden_dim: int = 8192, sim_weight: float = 25.0,
                 var_weight: float = 25.0, cov_weight: float = 1.0):
        super().__init__()
        self.backbone = backbone
        self.weights = (sim_weight, var_weight, cov_weight)
        self.projector = mlp(backbone.out_dim, hidden_dim, proj_dim, layers=3)

    def forward(self, batch: dict, progress: float = 0.0) -> dict:
        v1, v2 = batch["views"][:2]
        z1, z2 = self.projector(self.backbone(torch.cat([v1, v2]))).chunk(2)
        loss = vicreg(dist.gather_with_grad(z1), dist.gather_with_grad(z2), *self.weights)
        return {"loss": loss, "embed_std": embedding_std(z1)}
