"""Momentum (EMA) targets: BYOL, MoCo, DINO teachers.

The target is a frozen deep copy of the online network. After each optimizer step,
`ema_update(target, online, m)` sets every target parameter to m * target + (1 - m) * online and
copies buffers (BatchNorm statistics) as they are. The momentum usually follows
`mmssl.optim.cosine_schedule(progress, base, 1.0)`, BYOL's tau = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def make_target(online: nn.Module) -> nn.Module:
    """A copy of `online` that receives no gradients (its weights move only by `ema_update`)."""
    target = copy.deepcopy(online)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float | torch.Tensor) -> None:
    """target <- momentum * target + (1 - momentum) * online, parameter by parameter; buffers copied.
    `momentum` may be a 0-d tensor on the device, so a schedule kept there costs no host sync."""
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.lerp_(o.detach(), 1.0 - momentum)
    for t, o in zip(target.buffers(), online.buffers(), strict=True):
        t.copy_(o)
