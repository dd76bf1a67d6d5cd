"""Relative patch position: which of its 8 neighbours is this patch, seen from the centre one?

Paper: Doersch, Gupta and Efros 2015, "Unsupervised Visual Representation Learning by Context
Prediction", https://arxiv.org/abs/1505.05192. The image is cut into a 3 x 3 grid of cells; from
each cell a random `crop` share is taken, which leaves a gap between neighbouring patches and
jitters them (the paper's guards against matching edges or continuing lines across the border).
The centre patch and one of its 8 neighbours go through the same (Siamese) backbone; a classifier
on the two features, concatenated, names the neighbour's position.

Chromatic aberration. Lenses shift colour channels by position in the frame, so a network can
tell where a patch lies from the green-magenta fringe alone. `colour_guard: drop` keeps one of the
three channels per patch and replaces the other two with faint Gaussian noise (the paper's colour
dropping); `gray` averages the channels (as the paper's projection away from green-magenta does in
the limit); `none` keeps the colours.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..collapse import embedding_std
from ..models.heads import mlp
from .jigsaw import cut_tiles

CENTRE = 4  # the middle cell of the 3 x 3 grid, in row-major order
NEIGHBOURS = [i for i in range(9) if i != CENTRE]  # class k is the cell NEIGHBOURS[k]


def guard_colour(patches: torch.Tensor, guard: str, noise: float = 0.01) -> torch.Tensor:
    """patches [N, 3, s, s] -> the same with the chromatic-aberration guard applied to each patch."""
    if guard == "none":
        return patches
    if guard == "gray":
        return patches.mean(1, keepdim=True).expand_as(patches)
    keep = torch.randint(3, (patches.shape[0],), device=patches.device)
    kept = F.one_hot(keep, 3).to(patches.dtype)[:, :, None, None]  # [N, 3, 1, 1]
    return patches * kept + noise * torch.randn_like(patches) * (1 - kept)


class RelativePosition(nn.Module):
    """backbone `[N, 3, s, s] -> [N, D]`; batch `image` [B, 3, S, S]; 8-way classification of the
    neighbour's position.

    Args:
        crop: share of each grid cell a patch covers (the rest is gap and jitter)
        patch_size: side the patches are resized to before the backbone
        hidden_dim: hidden width of the position classifier
        colour_guard: against chromatic aberration: drop two channels per patch, gray, or none
    """

    views = "one_image"  # the batch it trains on: mmssl.recipe_image.VIEWS

    def __init__(self, backbone: nn.Module, crop: float = 0.75, patch_size: int = 16, hidden_dim: int = 512,
                 colour_guard: Literal["drop", "gray", "none"] = "drop"):
        super().__init__()
        if not 0.0 < crop <= 1.0:
            raise ValueError(f"crop must be in (0, 1], got {crop}")
        if colour_guard not in ("drop", "gray", "none"):
            raise ValueError(f"colour_guard must be drop, gray or none, got '{colour_guard}'")
        self.backbone, self.crop, self.patch_size, self.colour_guard = backbone, crop, patch_size, colour_guard
        self.classifier = mlp(2 * backbone.out_dim, hidden_dim, len(NEIGHBOURS), layers=2)

    def pairs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (centre patches [B, 3, s, s], neighbour patches [B, 3, s, s], labels [B] in 0..7)."""
        tiles = cut_tiles(images, 3, self.crop, self.patch_size)  # [B, 9, 3, s, s]
        b = images.shape[0]
        labels = torch.randint(len(NEIGHBOURS), (b,), device=images.device)
        cells = torch.tensor(NEIGHBOURS, device=images.device)[labels]
        rows = torch.arange(b, device=images.device)
        return tiles[:, CENTRE], tiles[rows, cells], labels

    def forward(self, batch: dict, progress: float = 0.0) -> dict:
        centre, neighbour, labels = self.pairs(batch["image"])
        b = centre.shape[0]
        feats = self.backbone(guard_colour(torch.cat([centre, neighbour]), self.colour_guard))
        logits = self.classifier(torch.cat([feats[:b], feats[b:]], 1))
        return {"loss": F.cross_entropy(logits, labels), "accuracy": (logits.argmax(1) == labels).float().mean(),
                "embed_std": embedding_std(feats[:b])}
