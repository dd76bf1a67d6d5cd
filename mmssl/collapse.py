"""Collapse monitor for self-supervised embeddings.

`embedding_std` is the per-dimension standard deviation of L2-normalised embeddings over the
batch, averaged over dimensions and scaled by sqrt(D) (the measure of SimSiam, Chen & He 2021,
Fig. 2, https://arxiv.org/abs/2011.10566). Embeddings spread over the sphere give about 1; a
collapsed encoder, mapping every image to one point, gives 0.

`effective_rank` catches the partial, *dimensional* collapse that `embedding_std` misses: features
spread over a few directions only. It is RankMe (Garrido et al. 2023,
https://arxiv.org/abs/2210.02885): the exponential of the entropy of the singular values of the
feature matrix, normalised to sum to one. D equal singular values give D; one direction gives 1.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

COLLAPSE_THRESHOLD = 0.1


@torch.no_grad()
def embedding_std(z: torch.Tensor) -> torch.Tensor:
    """z [B, D] -> scalar in [0, ~1]."""
    z = F.normalize(z.detach().float(), dim=1)
    return z.std(dim=0).mean() * math.sqrt(z.shape[1])


@torch.no_grad()
def effective_rank(features: torch.Tensor, eps: float = 1e-7) -> float:
    """features [N, D] -> RankMe, a real number in [1, min(N, D)]."""
    sigma = torch.linalg.svdvals(features.detach().double())
    p = sigma / sigma.sum() + eps
    return float(torch.exp(-(p * p.log()).sum()))
