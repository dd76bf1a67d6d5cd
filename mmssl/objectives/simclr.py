"""SimCLR: contrastive learning of views with NT-Xent over 2N views.

Paper: Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations",
https://arxiv.org/abs/2002.05709. Projections of both views are gathered from every rank with
gradients, so each view's negatives are the other 2N - 2 views of the global batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import dist
from ..collapse import embedding_std
from ..losses import nt_xent
from ..models.heads import mlp


class SimCLR(nn.Module):
    """backbone `[B,3,H,W] -> [B, D]`; projector MLP `D -> hidden -> proj_dim`; batch `views` (2 x [B,3,H,W]).

    Args:
        proj_dim: width of the projection the loss compares
        hidden_dim: hidden width of the 2-layer projector
        temperature: NT-Xent temperature
    """

    views = "two_views"  # the batch it trains on: mmssl.recipe_image.VIEWS

    def __init__(self, backbone: nn.Module, proj_dim: int = 128, hidden_dim: int = 2048, temperature: float = 0.5):
        super().__init__()
        self.backbone, self.temperature = backbone, temperature
        self.projector = mlp(backbone.out_dim, hidden_dim, proj_dim, layers=2)

    def forward(self, batch: dict, progress: float = 0.0) -> dict:
        v1, v2 = batch["views"][:2]
        z1, z2 = F.normalize(self.projector(self.backbone(torch.cat([v1, v2]))), dim=-1).chunk(2)
        loss = nt_xent(z1, z2, dist.gather_with_grad(z1), dist.gather_with_grad(z2), self.temperature,
                       dist.row_offset(z1.shape[0]))
        return {"loss": loss, "embed_std": embedding_std(z1)}
