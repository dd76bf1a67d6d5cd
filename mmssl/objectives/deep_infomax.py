"""Deep InfoMax (local): an image's global feature must pick out its own local features.

Paper: Hjelm et al. 2019, "Learning deep representations by mutual information estimation and
maximization", https://arxiv.org/abs/1808.06670 (local DIM with the InfoNCE bound, section 3).
The backbone's pooled feature is the global summary y of an image; the feature map of an earlier
stage gives one local feature per location. For every image i and location p, the pair (y_i,
l_{i,p}) is the positive, and the local features of every other image in the batch, at every
location, are the negatives. Maximising this bound on the mutual information between y and each
local feature makes the summary keep what is shared across the image's parts, not what one
location alone holds. Scores are dot products of small MLP embeddings of both, divided by the
square root of their width (as in AMDIM, Bachman et al. 2019), which keeps the softmax unsaturated
at initialisation.
"""
from __future__ import annotations

import torch
from torch import nn

from ..collapse import embedding_std
from ..models.heads import mlp


def local_infonce(global_: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
    """global_ [B, E], local [B, L, E] -> the local DIM InfoNCE loss: for each image i and location p,
    -log of e^{s(i,i,p)} over itself plus e^{s(i,j,q)} for every other image j and location q, where
    s(i,j,q) = global_i . local_{j,q} / sqrt(E); averaged over i and p."""
    b, n, e = local.shape
    scores = (global_ @ local.reshape(b * n, e).T).view(b, b, n) / e ** 0.5  # [i, j, q]
    same = torch.eye(b, dtype=torch.bool, device=local.device)
    positives = scores[same]  # [B, L]: s(i, i, p)
    negatives = torch.logsumexp(scores.masked_fill(same.unsqueeze(-1), float("-inf")).view(b, -1), dim=1)  # [B]
    return (torch.logaddexp(positives, negatives.unsqueeze(1)) - positives).mean()


class DeepInfoMax(nn.Module):
    """backbone: a transformers convolutional backbone (its stage outputs give the local maps);
    batch `image` [B, 3, S, S].

    Args:
        local_stage: stage whose map gives the local features (0 is the stem)
        embed_dim: width of the global and local embeddings the scores compare
        hidden_dim: hidden width of the global MLP and the local 1x1-convolution MLP
    """

    views = "one_image"  # the batch it trains on: mmssl.recipe_image.VIEWS

    def __init__(self, backbone: nn.Module, local_stage: int = 1, embed_dim: int = 128, hidden_dim: int = 512):
        super().__init__()
        sizes = getattr(getattr(getattr(backbone, "model", None), "config", None), "hidden_sizes", None)
        if sizes is None:
            raise ValueError("Deep InfoMax needs a transformers convolutional backbone (its stage outputs are the "
                             f"local feature maps), not {type(backbone).__name__}")
        if getattr(backbone, "pooling", None) != "pooler":
            raise ValueError(f"Deep InfoMax reads the backbone's pooled output (pooling: pooler), not {backbone.pooling}")
        if not 0 <= local_stage <= len(sizes):
            raise ValueError(f"local_stage {local_stage} does not exist: the backbone has stages 0 (stem) to {len(sizes)}")
        config = backbone.model.config
        channels = config.embedding_size if local_stage == 0 else sizes[local_stage - 1]
        self.backbone, self.local_stage = backbone, local_stage
        self.global_head = mlp(backbone.out_dim, hidden_dim, embed_dim, layers=2)
        self.local_head = nn.Sequential(nn.Conv2d(channels, hidden_dim, 1), nn.ReLU(inplace=True),
                                        nn.Conv2d(hidden_dim, embed_dim, 1))

    def forward(self, batch: dict, progress: float = 0.0) -> dict:
        out = self.backbone.model(pixel_values=batch["image"], output_hidden_states=True)
        pooled = out.pooler_output.flatten(1)  # what the backbone's features are (pooling: pooler)
        local = self.local_head(out.hidden_states[self.local_stage]).flatten(2).transpose(1, 2)  # [B, h*w, E]
        loss = local_infonce(self.global_head(pooled), local)
        return {"loss": loss, "embed_std": embedding_std(pooled)}
