"""SupCon: supervised contrastive learning, every image of the same class is a positive.

Paper: Khosla et al. 2020, "Supervised Contrastive Learning", https://arxiv.org/abs/2004.11362
(the L^sup_out form). Two views per image; the projections and labels of the global batch are
gathered so that positives and negatives come from every rank. Needs labelled shards (`cls`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import dist
from ..collapse import embedding_std
from ..losses import supcon_loss
from ..models.heads import mlp


class SupCon(nn.Module):
    """backbone `[B,3,H,W] -> [B, D]`; projector `-> proj_dim`; batch `views` (2 x [B,3,H,W]) and `label` [B].

    Args:
        proj_dim: width of the projection the loss compares
        hidden_dim: hidden width of the 2-layer projector
        temperature: supervised-contrastive temperature
    """

    views = "labelled_views"  # the batch it trains on: mmssl.recipe_image.VIEWS

    def __init__(self, backbone: nn.Module, proj_dim: int = 128, hidden_dim: int = 2048, temperature: float = 0.1):
        super().__init__()
        self.backbone, self.temperature = backbone, temperature
        self.projector = mlp(backbone.out_dim, hidden_dim, proj_dim, layers=2)

    def forward(self, batch: dict, progress: float = 0.0) -> dict:
        views = batch["views"][:2]
        z = F.normalize(self.projector(self.backbone(torch.cat(views))), dim=-1)  # [2B, E]
        labels = batch["label"].repeat(2)
        loss = supcon_loss(z, labels, dist.gather_with_grad(z), dist.gather_no_grad(labels), self.temperature,
                           dist.row_offset(z.shape[0]))
        return {"loss": loss, "embed_std": embedding_std(z)}
