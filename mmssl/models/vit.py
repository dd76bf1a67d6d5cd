"""A compact Vision Transformer whose forward can drop tokens (the MAE encoder and decoder blocks).

Pre-norm blocks (`nn.TransformerEncoderLayer`, GELU), a class token and fixed 2-D sine-cosine
position embeddings, as in MAE (https://arxiv.org/abs/2111.06377). `forward(images)` returns pooled
features `[B, dim]` (mean of the patch tokens after the final norm), so the encoder plugs into kNN
and linear-probe evaluation like any other; `tokens(images, mask_ratio)` is the masked path.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from . import serialization
from .masking import random_masking


def sincos_2d(dim: int, grid: int) -> torch.Tensor:
    """Fixed position embeddings `[grid*grid, dim]`: half the channels encode the row, half the column."""
    if dim % 4:
        raise ValueError(f"ViT width must be a multiple of 4 for 2-D sin-cos embeddings, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64), indexing="ij")
    parts = []
    for pos in (ys.flatten(), xs.flatten()):
        angles = pos[:, None] * omega[None]
        parts += [angles.sin(), angles.cos()]
    return torch.cat(parts, dim=1).float()


def blocks(dim: int, depth: int, heads: int, mlp_ratio: float = 4.0) -> nn.ModuleList:
    return nn.ModuleList(nn.TransformerEncoderLayer(dim, heads, int(dim * mlp_ratio), dropout=0.0, activation="gelu",
                                                    batch_first=True, norm_first=True) for _ in range(depth))


class ViT(nn.Module):
    """`[B, C, S, S]` images cut into `(S/patch)^2` patches of width `dim`."""

    def __init__(self, image_size: int = 32, patch_size: int = 4, in_chans: int = 3, dim: int = 192, depth: int = 6,
                 heads: int = 3, mlp_ratio: float = 4.0):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.config = dict(image_size=image_size, patch_size=patch_size, in_chans=in_chans, dim=dim, depth=depth,
                           heads=heads, mlp_ratio=mlp_ratio)
        self.patch_size, self.out_dim = patch_size, dim
        self.num_patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos_embed", sincos_2d(dim, image_size // patch_size), persistent=False)
        self.blocks = blocks(dim, depth, heads, mlp_ratio)
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.cls_token, std=0.02)

    def tokens(self, images: torch.Tensor, mask_ratio: float = 0.0):
        """-> (tokens [B, 1 + keep, dim] with the class token first, mask [B, L] (1 = hidden), ids_restore [B, L])."""
        x = self.patch_embed(images).flatten(2).transpose(1, 2) + self.pos_embed
        if mask_ratio > 0:
            x, mask, ids_restore = random_masking(x, mask_ratio)
        else:
            b, length = x.shape[:2]
            mask = torch.zeros(b, length, device=x.device)
            ids_restore = torch.arange(length, device=x.device).expand(b, -1)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x), mask, ids_restore

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """`[B, C, S, S] -> [B, dim]`: mean of the patch tokens."""
        return self.tokens(images)[0][:, 1:].mean(dim=1)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        serialization.save(self, directory, "mmssl_vit", self.config, self.out_dim)
