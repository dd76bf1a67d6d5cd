"""Jigsaw puzzles: recover which permutation shuffled the tiles of an image.

Paper: Noroozi & Favaro 2016, "Unsupervised Learning of Visual Representations by Solving Jigsaw
Puzzles", https://arxiv.org/abs/1603.09246. The image is cut into grid x grid cells; a random
crop of each cell (so tiles do not share edges, which would be a shortcut) is encoded by a shared
backbone; the features, concatenated in shuffled order, classify the permutation among a fixed set
chosen greedily for maximal Hamming distance (the paper's algorithm; `perm_set` also draws it at
random or for minimal distance, the paper's comparison). With `tile_norm` (the
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
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..collapse import embedding_std
from ..models.heads import mlp


def permutation_set(n_tiles: int, n_perms: int, how: str = "max", seed: int = 0) -> torch.Tensor:
    """`[n_perms, n_tiles]` distinct permutations, all of them if fewer exist. The first is random;
    `how` picks the rest:
    - "max": each added to maximise its minimum Hamming distance to those already chosen (the
      paper's greedy algorithm; its most distinct sets transfer best);
    - "random": drawn uniformly;
    - "min": each added to minimise its summed Hamming distance to those already chosen (the
      paper's minimal set: neighbouring orders that differ in few tiles).
    Ties are broken at random."""
    if how not in ("max", "random", "min"):
        raise ValueError(f"the permutation set is max, random or min, got '{how}'")
    every = np.array(list(itertools.permutations(range(n_tiles))), dtype=np.int8)
    if n_perms >= len(every):
        return torch.from_numpy(every.astype(np.int64))
    rng = np.random.default_rng(seed)
    if how == "random":
        return torch.from_numpy(every[rng.choice(len(every), n_perms, replace=False)].astype(np.int64))
    # Each permutation packed as one 4-bit digit per tile in a uint64: the Hamming distance to one of
    # them is the number of non-zero digits of the XOR, summed by one multiplication into the top
    # digit (no sum exceeds 15 for up to 15 tiles). One pass over 9! words per added permutation, in
    # place of comparing [9!, 9] arrays, keeps the paper's 1,000-permutation sets quick to build.
    u = np.uint64
    packed = (every.astype(u) << (np.arange(n_tiles, dtype=u) * u(4))).sum(1, dtype=u)
    low_bits, top = u(int("1" * n_tiles, 16)), u(4 * (n_tiles - 1))

    def distance_to(i: int) -> np.ndarray:
        x = packed ^ packed[i]
        x = (x | x >> u(1) | x >> u(2) | x >> u(3)) & low_bits
        return ((x * low_bits) >> top & u(15)).astype(np.int64)

    chosen = [int(rng.integers(len(every)))]
    dist = distance_to(chosen[0])  # min (max) or sum (min) over the chosen
    taken = np.zeros(len(every), dtype=bool)
    taken[chosen[0]] = True
    for _ in range(n_perms - 1):
        if how == "max":  # a chosen one is at distance 0, so never picked again
            best = np.flatnonzero(dist == dist.max())
        else:
            free = np.where(taken, np.iinfo(np.int64).max, dist)
            best = np.flatnonzero(free == free.min())
        pick = int(rng.choice(best))
        chosen.append(pick)
        taken[pick] = True
        step = distance_to(pick)
        dist = np.minimum(dist, step) if how == "max" else dist + step
    return torch.from_numpy(every[chosen].astype(np.int64))


def hamming_distances(perms: torch.Tensor) -> tuple[float, int]:
    """`[P, T]` permutations -> (mean, minimum) Hamming distance over the pairs of distinct ones."""
    d = (perms[:, None, :] != perms[None, :, :]).sum(-1).float()
    off = ~torch.eye(len(perms), dtype=torch.bool)
    return float(d[off].mean()), int(d[off].min())


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
        n_perms: permutations in the set
        perm_set: how the set is chosen: max (most distinct, the paper's), random or min (least distinct)
        tile_size: side each tile is resized to before the encoder
        crop: share of each cell cropped, so tiles share no edge
        hidden_dim: hidden width of the permutation classifier
        tile_norm: standardise each tile on its own (the paper's guard against low-level shortcuts)
    """

    views = "one_image"  # the batch it trains on: mmssl.recipe_image.VIEWS

    def __init__(self, backbone: nn.Module, grid: int = 3, n_perms: int = 100, tile_size: int = 64, crop: float = 0.85,
                 hidden_dim: int = 1024, tile_norm: bool = True, perm_set: Literal["max", "random", "min"] = "max"):
        super().__init__()
        self.backbone, self.grid, self.tile_size, self.crop, self.tile_norm = backbone, grid, tile_size, crop, tile_norm
        self.register_buffer("perms", permutation_set(grid * grid, n_perms, perm_set), persistent=False)
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
