"""Jigsaw puzzles: recover which permutation shuffled the tiles of an image.

Paper: Noroozi & Favaro 2016, "Unsupervised Learning of Visual Representations by Solving Jigsaw
Puzzles", https://arxiv.org/abs/1603.09246. The image is cut into grid x grid cells; a random
crop of each cell (so tiles do not share edges, which would be a shortcut) is encoded by a shared
backbone; the features, concatenated in shuffled order, classify the permutation among a fixed set
chosen greedily for maximal Hamming distance (the paper's algorithm). With `tile_norm` (the
paper's default) each tile is standardised on its own, zero mean and unit standard deviation over
its pixels, so that brightness and contrast of a tile do not tell where it came from; the
Fashion-MNIST demo turns it off (see the results table in docs/images.md). The crop offset is
drawn once per tile position and batch rather than per image, to keep it one tensor operation;
it comes from Python's generator (seeded and checkpointed like torch's), so no value is read
back from the device.
"""
from __future__ import annotations

import itertools
import random

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..collapse import embedding_std
from ..models.heads import mlp


def max_hamming_permutations(n_tiles: int, n_perms: int, seed: int = 0) -> torch.Tensor:
    """`[n_perms, n_tiles]` permutations, each added to maximise its minimum Hamming distance to
    those already chosen (ties broken at random); the first is random. All of them if fewer exist."""
    every = np.array(list(itertools.permutations(range(n_tiles))), dtype=np.int8)
    if n_perms >= len(every):
        return torch.from_numpy(every.astype(np.int64))
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(len(every)))]
    min_dist = (every != every[chosen[0]]).sum(1)
    for _ in range(n_perms - 1):
        best = np.flatnonzero(min_dist == min_dist.max())
        pick = int(rng.choice(best))
        chosen.append(pick)
        min_dist = np.minimum(min_dist, (every != every[pick]).sum(1))
    return torch.from_numpy(every[chosen].astype(np.int64))


def cut_tiles(images: torch.Tensor, grid: int, crop: float, tile_size: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, grid*grid, C, tile_size, tile_size]: a random `crop` share of each cell."""
    b, c, h, w = images.shape
    ch, cw = h // grid, w // grid
    th, tw = max(1, int(ch * crop)), max(1, int(cw * crop))
    tiles = []
    for r in range(grid):
        for col in range(grid):
            dy, dx = random.randrange(ch - th + 1), random.randrange(cw - tw + 1)
            tiles.append(images[:, :, r * ch + dy: r * ch + dy + th, col * cw + dx: col * cw + dx + tw])
    tiles = torch.stack(tiles, dim=1).flatten(0, 1)
    if (th, tw) != (tile_size, tile_size):
        tiles = F.interpolate(tiles, size=(tile_size, tile_size), mode="bilinear", align_corners=False)
    return tiles.view(b, grid * grid, c, tile_size, tile_size)


def standardise_tiles(tiles: torch.Tensor, eps: float = 1e-2) -> torch.Tensor:
    """[..., C, s, s] -> the same with each tile at zero mean and unit std over its C*s*s values. A
    nearly flat tile (std below `eps`: a blank corner of the image) is divided by `eps` instead, so
    its rounding noise is not blown up into a pattern."""
    flat = tiles.flatten(-3)
    mean, std = flat.mean(-1, keepdim=True), flat.std(-1, keepdim=True)
    return ((flat - mean) / std.clamp_min(eps)).view_as(tiles)


class Jigsaw(nn.Module):
    """backbone `[B*T,3,s,s] -> [B*T, D]` per tile; classifier `T*D -> n_perms`; batch `image`.

    Args:
        grid: tiles per side (grid x grid tiles)
        n_perms: permutations in the set (chosen for maximal Hamming distance)
        tile_size: side each tile is resized to before the encoder
        crop: share of each cell cropped, so tiles share no edge
        hidden_dim: hidden width of the permutation classifier
        tile_norm: standardise each tile on its own (the paper's guard against low-level shortcuts)
    """

    views = "one_image"  # the batch it trains on: mmssl.recipe_image.VIEWS

    def __init__(self, backbone: nn.Module, grid: int = 3, n_perms: int = 100, tile_size: int = 64, crop: float = 0.85,
                 hidden_dim: int = 1024, tile_norm: bool = True):
        super().__init__()
        self.backbone, self.grid, self.tile_size, self.crop, self.tile_norm = backbone, grid, tile_size, crop, tile_norm
        self.register_buffer("perms", max_hamming_permutations(grid * grid, n_perms), persistent=False)
        self.classifier = mlp(grid * grid * backbone.out_dim, hidden_dim, len(self.perms), layers=2)

    def forward(self, batch: dict, progress: float = 0.0) -> dict:
        images = batch["image"]
        tiles = cut_tiles(images, self.grid, self.crop, self.tile_size)  # [B, T, C, s, s]
        if self.tile_norm:
            tiles = standardise_tiles(tiles)
        b, t = tiles.shape[:2]
        target = torch.randint(len(self.perms), (b,), device=images.device)
        order = self.perms[target]  # [B, T]: position j shows tile order[j]
        shuffled = torch.gather(tiles, 1, order.view(b, t, 1, 1, 1).expand_as(tiles))
        feats = self.backbone(shuffled.flatten(0, 1))
        logits = self.classifier(feats.view(b, -1))
        loss = F.cross_entropy(logits, target)
        return {"loss": loss, "accuracy": (logits.argmax(1) == target).float().mean(), "embed_std": embedding_std(feats)}
