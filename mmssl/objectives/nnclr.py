"""NNCLR: contrastive learning with nearest neighbours from a support set as positives.

Paper: Dwibedi et al. 2021, "With a Little Help from My Friends: Nearest-Neighbor Contrastive
Learning of Visual Representations", https://arxiv.org/abs/2104.14548. The positive of view 1's
prediction target is NN(z1), its nearest neighbour in a queue of past projections; the loss
-log exp(NN(z1_i).p2_i / t) / sum_k exp(NN(z1_i).p2_k / t) is symmetrised, with the predictions
p of the global batch as candidates.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import dist
from ..collapse import embedding_std
from ..losses import info_nce
from ..models.heads import mlp
from ..models.queue import FeatureQueue


@torch.no_grad()
def nearest_neighbour(z: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """z [B, D], support [K, D], both normalised -> the support row closest to each z, [B, D]."""
    return support[(z @ support.t()).argmax(dim=1)]


class NNCLR(nn.Module):
    """backbone `[B,3,H,W] -> [B, D]`; projector and predictor `-> proj_dim`; batch `views`.

    Args:
        proj_dim: projection width
        hidden_dim: hidden width of the projector
        pred_hidden_dim: hidden width of the predictor
        temperature: InfoNCE temperature
        queue_size: support set of past projections the nearest neighbour is taken from
    """

    views = "two_views"  # the batch it trains on: mmssl.recipe_image.VIEWS

    def __init__(self, backbone: nn.Module, proj_dim: int = 256, hidden_dim: int = 2048, pred_hidden_dim: int = 4096,
                 temperature: float = 0.1, queue_size: int = 98304):
        super().__init__()
        self.backbone, self.temperature = backbone, temperature
        self.projector = mlp(backbone.out_dim, hidden_dim, proj_dim, layers=3, last_norm=True)
        self.predictor = mlp(proj_dim, pred_hidden_dim, proj_dim, layers=2)
        self.support = FeatureQueue(queue_size, proj_dim)

    def forward(self, batch: dict, progress: float = 0.0) -> dict:
        v1, v2 = batch["views"][:2]
        z = self.projector(self.backbone(torch.cat([v1, v2])))
        p1, p2 = F.normalize(self.predictor(z), dim=-1).chunk(2)
        z1, z2 = F.normalize(z, dim=-1).chunk(2)
        nn1, nn2 = nearest_neighbour(z1, self.support.items), nearest_neighbour(z2, self.support.items)
        offset = dist.row_offset(z1.shape[0])
        loss = 0.5 * (info_nce(nn1, dist.gather_with_grad(p2), self.temperature, offset)
                      + info_nce(nn2, dist.gather_with_grad(p1), self.temperature, offset))
        self.support.push(dist.gather_no_grad(z1.detach()))
        return {"loss": loss, "embed_std": embedding_std(z1)}
