"""SimSiam: a Siamese network with a predictor and a stop-gradient, and no negatives.

Paper: Chen & He 2021, "Exploring Simple Siamese Representation Learning",
https://arxiv.org/abs/2011.10566. L = D(p1, sg(z2)) / 2 + D(p2, sg(z1)) / 2 with D the negative
cosine; the projector ends in BatchNorm, the predictor is a bottleneck MLP.

`predictor_fixed_lr` (default on, as in the paper) keeps the predictor's learning rate at its
base value while the encoder's warms up and decays: the paper finds this slightly better, since
the predictor should adapt to the latest representation. `predictor_lr_mult` scales that rate;
Tian et al. 2021 (https://arxiv.org/abs/2102.06810) report that a predictor learning faster than
the encoder does better.
"""
from __future__ import annotations

import torch
from torch import nn

from ..collapse import embedding_std
from ..losses import neg_cosine
from ..models.heads import mlp


class SimSiam(nn.Module):
    """backbone `[B,3,H,W] -> [B, D]`; 3-layer projector `-> proj_dim`; predictor `proj_dim -> pred_dim -> proj_dim`.

    Args:
        proj_dim: projection width
        pred_dim: bottleneck width of the predictor
        predictor_lr_mult: predictor learning rate / encoder learning rate
        predictor_fixed_lr: the predictor's rate stays at its base value instead of following the schedule (the paper's)
    """

    views = "two_views"  # the batch it trains on: mmssl.recipe_image.VIEWS

    def __init__(self, backbone: nn.Module, proj_dim: int = 2048, pred_dim: int = 512, predictor_lr_mult: float = 1.0,
                 predictor_fixed_lr: bool = True):
        super().__init__()
        # Both read by mmssl.train.fit.
        self.lr_multipliers = {"predictor": predictor_lr_mult}
        self.fixed_lr = ("predictor",) if predictor_fixed_lr else ()
        self.backbone = backbone
        self.projector = mlp(backbone.out_dim, proj_dim, proj_dim, layers=3, last_norm=True)
        self.predictor = mlp(proj_dim, pred_dim, proj_dim, layers=2)

    def forward(self, batch: dict, progress: float = 0.0) -> dict:
        v1, v2 = batch["views"][:2]
        z1, z2 = self.projector(self.backbone(torch.cat([v1, v2]))).chunk(2)
        p1, p2 = self.predictor(torch.cat([z1, z2])).chunk(2)
        loss = 0.5 * neg_cosine(p1, z2) + 0.5 * neg_cosine(p2, z1)
        return {"loss": loss, "embed_std": embedding_std(z1)}
