"""A FIFO of past embeddings (MoCo v2 negatives, NNCLR support set, SwAV's queue).

The queue is a buffer, so it is saved in checkpoints and an interrupted run resumes with the same
queue. `push` takes the keys of the global batch (gathered from every rank), so every rank holds
the same queue.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FeatureQueue(nn.Module):
    """`size` rows of width `dim`, filled oldest-first; `filled` counts valid rows (until it wraps)."""

    def __init__(self, size: int, dim: int, normalize: bool = True):
        super().__init__()
        if size < 1:
            raise ValueError(f"queue size must be >= 1, got {size}")
        init = torch.randn(size, dim)
        self.register_buffer("items", F.normalize(init, dim=1) if normalize else init)
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def push(self, keys: torch.Tensor) -> None:
        """Overwrite the oldest rows with `keys` [N, dim] (N may exceed the free space; it wraps)."""
        keys = keys.detach().to(self.items.dtype)[-self.items.shape[0]:]
        n, size = keys.shape[0], self.items.shape[0]
        idx = (self.ptr + torch.arange(n, device=keys.device)) % size
        self.items[idx] = keys
        self.ptr.copy_((self.ptr + n) % size)
        self.filled.copy_(torch.clamp(self.filled + n, max=size))

    def valid(self) -> torch.Tensor:
        """The rows written so far, `[min(filled, size), dim]` (all rows once the queue has wrapped)."""
        return self.items[: int(self.filled)] if int(self.filled) < self.items.shape[0] else self.items
