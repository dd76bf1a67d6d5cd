"""MoCo v2: a query encoder against a momentum key encoder and a queue of past keys.

Chen et al. 2020, "Improved Baselines with Momentum Contrastive Learning",
https://arxiv.org/abs/2003.04297, on MoCo, https://arxiv.org/abs/1911.05722: an MLP head, a queue
of past keys as negatives, one direction (query view 1, key view 2). `symmetric=True` adds the
other direction (query view 2, key view 1) and averages the two terms, as MoCo v3 does
(`objectives/moco_v3.py`): every image then trains the encoder through both of its views, as in
SimCLR, BYOL and the other two-view objectives here, at twice the encoder work per step; both
views' keys are queued.

The key encoder follows the query encoder by EMA with momentum rising from `momentum` to 1 along
a cosine (`after_step`).

Shuffling BN (v2, MoCo section 3.3). A query and its positive key are otherwise normalised with the
statistics of the same images, while the queued negatives were normalised with other batches':
the batch statistics then mark the positive, and the encoder can learn that mark instead of the
image (the paper's "cheating"). The paper computes keys on a shuffled split of the batch across
GPUs; here each process splits its own batch into `bn_groups` sub-batches of at least 16 images
(BatchNorm statistics per sub-batch, as per GPU in the paper): contiguous ones for the queries,
those of a random permutation for the keys, so a key's sub-batch is not its query's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import dist
from ..collapse import embedding_std
from ..losses import moco_loss
from ..models.ema import ema_update, make_target
from ..models.heads import mlp
from ..models.queue import FeatureQueue
from ..optim import cosine_schedule


class MoCo(nn.Module):
    """backbone `[B,3,H,W] -> [B, D]`; batch `views` (2 x [B,3,H,W]).

    Args:
        proj_dim: projection width
        hidden_dim: hidden width of the projector
        temperature: InfoNCE temperature
        queue_size: past keys kept as negatives
        momentum: starting EMA momentum of the key encoder (rises to 1 on a cosine)
        bn_groups: shuffling BN: sub-batches with their own BatchNorm statistics
        symmetric: also query view 2 against view 1's keys, and average
    """

    views = "two_views"  # the batch it trains on: mmssl.recipe_image.VIEWS

    def __init__(self, backbone: nn.Module, proj_dim: int = 128, hidden_dim: int = 2048, temperature: float = 0.2,
                 queue_size: int = 65536, momentum: float = 0.99, bn_groups: int = 8, symmetric: bool = False):
        super().__init__()
        if bn_groups < 1:
            raise ValueError(f"MoCo bn_groups must be at least 1, got {bn_groups}")
        self.temperature, self.momentum, self.bn_groups, self.symmetric = temperature, momentum, bn_groups, symmetric
        self.queue = FeatureQueue(queue_size, proj_dim)
        self.online = nn.Sequential(backbone, mlp(backbone.out_dim, hidden_dim, proj_dim, layers=2, norm="none"))
        self.target = make_target(self.online)

    @property
    def backbone(self) -> nn.Module:
        """The encoder being trained (registered once, inside `online`)."""
        return self.online[0]

    def forward(self, batch: dict, progress: float = 0.0) -> dict:
        v1, v2 = batch["views"][:2]
        b = v1.shape[0]
        groups = max(1, min(self.bn_groups, b // 16))
        # Sub-batches of fewer than 16 images make BatchNorm statistics too noisy to learn from,
        # so small batches get fewer sub-batches. Only the views a direction needs are encoded:
        # query view 1 and key view 2, plus the reverse pair when symmetric.
        pairs = [(v1, v2), (v2, v1)] if self.symmetric else [(v1, v2)]
        negatives = self.queue.items.clone()  # push() then overwrites rows
        losses, keys = [], []
        for query_view, key_view in pairs:
            q = F.normalize(forward_in_groups(self.online, query_view, groups), dim=-1)
            with torch.no_grad():
                shuffle = torch.randperm(b, device=key_view.device)
                k = F.normalize(forward_in_groups(self.target, key_view, groups, shuffle), dim=-1)
            losses.append(moco_loss(q, k, negatives, self.temperature))
            keys.append(k)
            if len(keys) == 1:
                first_queries = q  # view 1's, whose spread is logged either way
        self.queue.push(dist.gather_no_grad(torch.cat(keys)))  # enqueue after use, as in the paper
        return {"loss": sum(losses) / len(losses), "embed_std": embedding_std(first_queries)}

    def after_step(self, progress: float) -> None:
        ema_update(self.target, self.online, cosine_schedule(progress, self.momentum, 1.0))


def forward_in_groups(net: nn.Module, x: torch.Tensor, groups: int, perm: torch.Tensor | None = None) -> torch.Tensor:
    """net over `groups` sub-batches of x `[B, ...]` (BatchNorm statistics per sub-batch) -> `[B, D]` in
    x's row order. With `perm` the sub-batches are cut from x[perm] (Shuffling BN's key side)."""
    if perm is None:
        return torch.cat([net(part) for part in x.chunk(groups)])
    out = torch.cat([net(part) for part in x[perm].chunk(groups)])
    return out[torch.argsort(perm)]
