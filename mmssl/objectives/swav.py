"""SwAV: swapped prediction of online cluster assignments across crops.

Paper: Caron et al. 2020, "Unsupervised Learning of Visual Features by Contrasting Cluster
Assignments", https://arxiv.org/abs/2006.09882. Each crop's normalised projection is scored
against K normalised prototypes. Codes for the global crops come from Sinkhorn-Knopp (equal
partition over the global batch, all-reduced across ranks), optionally over a queue of earlier
projections when batches are small. Every crop predicts the codes of the other global crops.
Prototypes are kept unit-norm and held fixed for the first `freeze_prototypes` of training.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..collapse import embedding_std
from ..losses import sinkhorn, swav_loss
from ..models.heads import mlp
from ..models.multicrop import forward_views
from ..models.queue import FeatureQueue


class SwAV(nn.Module):
    """backbone `[B,3,H,W] -> [B, D]`; projector `-> proj_dim`; K prototypes; batch `views` (global crops first).

    Args:
        proj_dim: projection width
        hidden_dim: hidden width of the projector
        n_prototypes: prototypes (clusters)
        n_global: global crops (their codes are the targets)
        temperature: softmax temperature of the prototype scores
        epsilon: Sinkhorn entropy regularisation
        sinkhorn_iters: Sinkhorn-Knopp iterations
        queue_size: past projections added to the codes' batch (0: none)
        queue_start: share of training after which the queue is used
        freeze_prototypes: share of training with the prototypes held fixed
    """

    views = "multi_crop"  # the batch it trains on: mmssl.recipe_image.VIEWS

    def __init__(self, backbone: nn.Module, proj_dim: int = 128, hidden_dim: int = 2048, n_prototypes: int = 3000,
                 n_global: int = 2, temperature: float = 0.1, epsilon: float = 0.05, sinkhorn_iters: int = 3,
                 queue_size: int = 0, queue_start: float = 0.15, freeze_prototypes: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.projector = mlp(backbone.out_dim, hidden_dim, proj_dim, layers=2)
        self.prototypes = nn.Linear(proj_dim, n_prototypes, bias=False)
        self.n_global, self.temperature, self.epsilon, self.iters = n_global, temperature, epsilon, sinkhorn_iters
        self.queue_start, self.freeze_prototypes = queue_start, freeze_prototypes
        # One queue per global crop, of this rank's projections: Sinkhorn sums across ranks already.
        self.queues = nn.ModuleList(FeatureQueue(queue_size, proj_dim) for _ in range(n_global)) if queue_size else None

    def forward(self, batch: dict, progress: float = 0.0) -> dict:
        with torch.no_grad():
            self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))
        z = [F.normalize(p, dim=-1) for p in forward_views(nn.Sequential(self.backbone, self.projector), batch["views"])]
        weight = self.prototypes.weight
        if progress < self.freeze_prototypes:
            weight = weight.detach()
        scores = [F.linear(zi, weight) for zi in z]
        codes = []
        with torch.no_grad():
            for i in range(self.n_global):
                s = scores[i].detach()
                use_queue = self.queues is not None and progress >= self.queue_start and int(self.queues[i].filled) > 0
                if use_queue:
                    s = torch.cat([self.queues[i].valid() @ weight.detach().t(), s])
                codes.append(sinkhorn(s, self.epsilon, self.iters)[-z[i].shape[0]:])
                if self.queues is not None:
                    self.queues[i].push(z[i])
        loss = swav_loss(scores, codes, self.temperature)
        return {"loss": loss, "embed_std": embedding_std(z[0])}
