"""Collapse monitor for self-supervised embeddings.

`embedding_std` is the per-dimension standard deviation of L2-normalised embeddings over the
batch, averaged over dimensions and scaled by sqrt(D) (the measure of SimSiam, Chen & He 2021,
Fig. 2, https://arxiv.org/abs/2011.10566). Embeddings spread over the sphere give about 1; a
collapsed encoder, mapping every image to one point, gives 0.
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
