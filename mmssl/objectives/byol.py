"""BYOL: an online network predicts the projection of a slowly moving target network.

Paper: Grill et al. 2020, "Bootstrap Your Own Latent", https://arxiv.org/abs/2006.07733. The loss
is 2 - 2 cos(q, z') symmetrised over the two views; the target is the EMA of the online network
with tau = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2, applied after every optimizer step.

`predictor_lr_mult` scales the predictor's learning rate. The paper argues BYOL works while the
predictor stays near its optimum for the current encoder; Tian et al. 2021
(https://arxiv.org/abs/2102.06810) report that a predictor learning faster than the encoder does
better. docs/images.md's results table measures what 10 does to the rank of the features.

`per_view_bn` (default on) encodes each view in its own forward pass, as the paper's algorithm
does, so BatchNorm normalises a view with that view's statistics; off, the two views go through
as one batch and share them.
"""
from __future__ import annotations

import torch
from torch import nn

from ..collapse import embedding_std
from ..losses import byol_loss
from ..models.ema import ema_update, make_target
from ..models.heads import mlp
from ..optim import cosine_schedule


class BYOL(nn.Module):
    """backbone `[B,3,H,W] -> [B, D]`; projector and predictor MLPs `-> proj_dim`; batch `views`.

    Args:
        proj_dim: projection and prediction width
        hidden_dim: hidden width of projector and predictor
        momentum: starting EMA momentum of the target (rises to 1 on a cosine)
        predictor_lr_mult: predictor learning rate / encoder learning rate
        per_view_bn: encode each view alone, so BatchNorm statistics are per view (the paper's)
    """

    views = "two_views"  # the batch it trains on: mmssl.recipe_image.VIEWS

    def __init__(self, backbone: nn.Module, proj_dim: int = 256, hidden_dim: int = 4096, momentum: float = 0.996,
                 predictor_lr_mult: float = 1.0, per_view_bn: bool = True):
        super().__init__()
        self.momentum, self.per_view_bn = momentum, per_view_bn
        self.lr_multipliers = {"predictor": predictor_lr_mult}  # read by mmssl.train.fit
        self.online = nn.Sequential(backbone, mlp(backbone.out_dim, hidden_dim, proj_dim, layers=2))
        self.predictor = mlp(proj_dim, hidden_dim, proj_dim, layers=2)
        self.target = make_target(self.online)

    @property
    def backbone(self) -> nn.Module:
        """The encoder being trained (registered once, inside `online`)."""
        return self.online[0]

    def forward(self, batch: dict, progress: float = 0.0) -> dict:
        v1, v2 = batch["views"][:2]
        batches = [v1, v2] if self.per_view_bn else [torch.cat([v1, v2])]
        p1, p2 = torch.cat([self.predictor(self.online(x)) for x in batches]).chunk(2)
        with torch.no_grad():
            t1, t2 = torch.cat([self.target(x) for x in batches]).chunk(2)
        loss = byol_loss(p1, t2) + byol_loss(p2, t1)
        return {"loss": loss, "embed_std": embedding_std(p1)}

    def after_step(self, progress: float) -> None:
        ema_update(self.target, self.online, cosine_schedule(progress, self.momentum, 1.0))
