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
