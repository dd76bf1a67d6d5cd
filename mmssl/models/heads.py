"""Projection and prediction heads."""
from __future__ import annotations

from torch import nn


def mlp(in_dim: int, hidden_dim: int, out_dim: int, layers: int = 2, norm: str = "bn", last_norm: bool = False) -> nn.Sequential:
    """Linear(-norm-ReLU) x (layers-1), then Linear; `layers=1` is a plain linear projection.

    norm: "bn" (SimCLR/BYOL), "ln", or "none". `last_norm` adds an affine-free BatchNorm at the
    end (SimSiam, Barlow Twins).
    """
    blocks: list[nn.Module] = []
    dim = in_dim
    for _ in range(layers - 1):
        blocks.append(nn.Linear(dim, hidden_dim, bias=norm == "none"))
        if norm == "bn":
            blocks.append(nn.BatchNorm1d(hidden_dim))
        elif norm == "ln":
            blocks.append(nn.LayerNorm(hidden_dim))
        blocks.append(nn.ReLU(inplace=True))
        dim = hidden_dim
    blocks.append(nn.Linear(dim, out_dim, bias=not last_norm))
    if last_norm:
        blocks.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*blocks)


class DINOHead(nn.Module):
    """DINO's projection head: a 3-layer MLP to a bottleneck, L2-normalised, then a weight-normalised
    linear layer to `out_dim` prototypes whose norm is fixed to 1 (Caron et al. 2021,
    https://arxiv.org/abs/2104.14294). `[B, in_dim] -> [B, out_dim]` logits."""

    def __init__(self, in_dim: int, out_dim: int = 4096, hidden_dim: int = 2048, bottleneck_dim: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim), nn.GELU(),
                                 nn.Linear(hidden_dim, bottleneck_dim))
        self.last = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        self.last.parametrizations.weight.original0.data.fill_(1.0)
        self.last.parametrizations.weight.original0.requires_grad_(False)

    def forward(self, x):
        return self.last(nn.functional.normalize(self.mlp(x), dim=-1))


def decoder_plan(s: int) -> tuple[int, int]:
    """(g, k): a decoder to an S x S map starts from g x g and doubles it k times, with k as large as
    keeps g >= 4 (32 px: 4 x 4 and 3 doublings; 224 px: 7 x 7 and 5)."""
    k = 0
    while s % 2 ** (k + 1) == 0 and s // 2 ** (k + 1) >= 4:
        k += 1
    if k == 0:
        raise ValueError(f"the decoder needs an even side of at least 8, got {s}")
    return s // 2 ** k, k


class ConvDecoder(nn.Module):
    """A feature vector `[B, D]` painted into a map `[B, out_channels, S, S]`: a fully connected
    bottleneck to `width` channels on a g x g grid, then k transposed convolutions (BatchNorm, ReLU)
    that double it and halve the channels (at least 32) up to S (`decoder_plan`); the context
    encoder's decoder (Pathak et al. 2016) with a plain fully connected bottleneck."""

    def __init__(self, in_dim: int, out_channels: int, size: int, width: int = 256):
        super().__init__()
        self.grid, ups = decoder_plan(size)
        self.width = width
        self.bottleneck = nn.Linear(in_dim, width * self.grid ** 2)
        layers, c_in = [], width
        for i in range(ups):
            last = i == ups - 1
            c_out = out_channels if last else max(32, c_in // 2)
            layers.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1))
            if not last:
                layers += [nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            c_in = c_out
        self.layers = nn.Sequential(*layers)

    def forward(self, features):
        return self.layers(self.bottleneck(features).view(-1, self.width, self.grid, self.grid))
