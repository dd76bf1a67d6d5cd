"""Run a network over multi-crop views, one forward pass per crop resolution."""
from __future__ import annotations

import itertools

import torch
from torch import nn


def forward_views(net: nn.Module, views: list[torch.Tensor]) -> list[torch.Tensor]:
    """views: V tensors [B, C, H_v, W_v] (consecutive views of one size are batched together, as in
    DINO and SwAV) -> V outputs [B, ...] in the same order."""
    outs: list[torch.Tensor] = []
    for _, group in itertools.groupby(views, key=lambda v: tuple(v.shape[-2:])):
        group = list(group)
        outs.extend(net(torch.cat(group)).chunk(len(group)))
    return outs
