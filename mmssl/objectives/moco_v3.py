"""MoCo v3: a query encoder with a predictor against a momentum key encoder, in-batch negatives.

Chen, Xie and He 2021, "An Empirical Study of Training Self-Supervised Vision Transformers",
https://arxiv.org/abs/2104.02057. No queue: the keys of the global batch (gathered from every
process) are the negatives, so every key is normalised with the same statistics and MoCo v2's
Shuffling BN is not needed. A 3-layer projector with a normalised last layer, a 2-layer predictor
on the query side, and the symmetric loss, each direction's InfoNCE scaled by 2t as in the
paper's code. The key encoder follows the query encoder by EMA with momentum rising from
`momentum` to 1 along a cosine (`after_step`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import dist
from ..collapse import embedding_std
from ..losses import info_nce
from ..models.ema import ema_update, make_target
from ..models.heads import mlp
from ..optim import cosine_schedule


class MoCoV3(nn.Module):
    """backbone `[B,3,H,W] -> [B, D]`; batch `views` (2 x [B,3,H,W]).

    Args:
        proj_dim: projection width
        hidden_dim: hidden width of the projector and the predictor
        temperature: InfoNCE temperature
        momentum: starting EMA momentum of the key encoder (rises to 1 on a cosine)
    """

    views = "two_views"  # the batch it trains on: mmssl.recipe_image.VIEWS

    def __init__(self, backbone: nn.Module, proj_dim: int = 128, hidden_dim: int = 2048, temperature: float = 0.2,
                 momentum: float = 0.99):
        super().__init__()
        self.temperature, self.momentum = temperature, momentum
        self.online = nn.Sequential(backbone, mlp(backbone.out_dim, hidden_dim, proj_dim, layers=3, last_norm=True))
        self.predictor = mlp(proj_dim, hidden_dim, proj_dim, layers=2)
        self.target = make_target(self.online)

    @property
    def backbone(self) -> nn.Module:
        """The encoder being trained (registered once, inside `online`)."""
        return self.online[0]

    def forward(self, batch: dict, progress: float = 0.0) -> dict:
        v1, v2 = batch["views"][:2]
        q1, q2 = F.normalize(self.predictor(self.online(torch.cat([v1, v2]))), dim=-1).chunk(2)
        with torch.no_grad():
            k1, k2 = F.normalize(self.target(torch.cat([v1, v2])), dim=-1).chunk(2)
        offset = dist.row_offset(v1.shape[0])
        all_k1, all_k2 = dist.gather_no_grad(k1), dist.gather_no_grad(k2)
        loss = 2 * self.temperature * (info_nce(q1, all_k2, self.temperature, offset)
                                       + info_nce(q2, all_k1, self.temperature, offset))
        return {"loss": loss, "embed_std": embedding_std(q1)}

    def after_step(self, progress: float) -> None:
        ema_update(self.target, self.online, cosine_schedule(progress, self.momentum, 1.0))
