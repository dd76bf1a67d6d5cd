"""Patches and random masking for masked image (and video) modelling.

As in MAE (He et al. 2021, https://arxiv.org/abs/2111.06377), the mask is drawn inside the model
with torch's RNG: each sample's tokens are ranked by uniform noise and the first `keep` are kept,
so the encoder only ever sees `[B, keep, D]` and its compute falls with the mask ratio.
"""
from __future__ import annotations

import torch
from einops import rearrange


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """`[B, C, H, W] -> [B, L, patch*patch*C]`, patches in row-major order, pixels (p, q, c) inside each."""
    return rearrange(images, "b c (h p) (w q) -> b (h w) (p q c)", p=patch, q=patch)


def unpatchify(patches: torch.Tensor, patch: int, channels: int, height: int, width: int) -> torch.Tensor:
    """Inverse of `patchify`: `[B, L, patch*patch*C] -> [B, C, H, W]`."""
    return rearrange(patches, "b (h w) (p q c) -> b c (h p) (w q)", h=height // patch, w=width // patch,
                     p=patch, q=patch, c=channels)


def random_masking(tokens: torch.Tensor, ratio: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep a random `1 - ratio` share of each sample's tokens.

    tokens [B, L, D] -> (visible [B, keep, D], mask [B, L] with 1 = hidden, ids_restore [B, L]),
    with keep = int(L * (1 - ratio)). `ids_restore` puts a `[B, L, D]` sequence stored as
    (visible, then hidden) back into the original order.
    """
    b, length, dim = tokens.shape
    keep = int(length * (1.0 - ratio))
    noise = torch.rand(b, length, device=tokens.device)
    ids_shuffle = noise.argsort(dim=1)
    ids_restore = ids_shuffle.argsort(dim=1)
    ids_keep = ids_shuffle[:, :keep]
    visible = torch.gather(tokens, 1, ids_keep.unsqueeze(-1).expand(-1, -1, dim))
    mask = torch.ones(b, length, device=tokens.device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return visible, mask, ids_restore


def tube_mask(batch: int, frames: int, patches: int, ratio: float, device=None) -> torch.Tensor:
    """VideoMAE's tube mask (Tong et al. 2022, https://arxiv.org/abs/2203.12602).

    One random set of `int(ratio * patches)` spatial positions per sample is hidden in every one of
    its `frames` temporal slots, so a hidden patch cannot be copied from a neighbouring frame.
    -> bool `[B, frames * patches]` (True = hidden), tokens ordered (time, row, column) as the
    Conv3d tubelet embedding flattens them. Every sample hides the same number of tokens.
    """
    hidden = int(ratio * patches)
    order = torch.rand(batch, patches, device=device).argsort(dim=1)
    spatial = torch.zeros(batch, patches, dtype=torch.bool, device=device)
    spatial.scatter_(1, order[:, :hidden], True)
    return spatial.repeat(1, frames)


def tubelet_patchify(video: torch.Tensor, tubelet: int, patch: int) -> torch.Tensor:
    """`[B, T, C, H, W] -> [B, (T/t)(H/p)(W/p), t*p*p, C]`: the pixels of each tubelet, channels last,
    tokens in the Conv3d embedding's order (time, row, column)."""
    return rearrange(video, "b (t u) c (h p) (w q) -> b (t h w) (u p q) c", u=tubelet, p=patch, q=patch)


def tubelet_unpatchify(tubelets: torch.Tensor, tubelet: int, patch: int, frames: int, height: int, width: int) -> torch.Tensor:
    """Inverse of `tubelet_patchify`: `[B, L, t*p*p, C] -> [B, T, C, H, W]`."""
    return rearrange(tubelets, "b (t h w) (u p q) c -> b (t u) c (h p) (w q)", t=frames // tubelet, h=height // patch,
                     w=width // patch, u=tubelet, p=patch, q=patch)
