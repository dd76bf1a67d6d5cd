"""Every cross-process call in mmssl goes through here, so that each one is a no-op in one process.

Rank and world size fall back to the launcher's environment variables (RANK, WORLD_SIZE) when no
process group exists yet, so data pipelines built before `Accelerator()` still split correctly.
"""
import os

import torch
import torch.distributed as torch_dist


def is_distributed() -> bool:
    return torch_dist.is_available() and torch_dist.is_initialized() and torch_dist.get_world_size() > 1


def rank() -> int:
    if torch_dist.is_available() and torch_dist.is_initialized():
        return torch_dist.get_rank()
    return int(os.environ.get("RANK", 0))


def world_size() -> int:
    if torch_dist.is_available() and torch_dist.is_initialized():
        return torch_dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", 1))


def is_main_process() -> bool:
    return rank() == 0


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` [B, ...] from every rank along dim 0 -> [world*B, ...], keeping gradients.

    `torch.distributed.nn.functional.all_gather` back-propagates into every rank's slice, which is
    what global-negative contrastive losses need; `accelerator.gather` does not.
    """
    if not is_distributed():
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` [B, ...] from every rank -> [world*B, ...] without gradients (features for eval)."""
    if not is_distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    torch_dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of `x` over ranks, in place and returned (DINO centre, Barlow Twins statistics)."""
    if is_distributed():
        torch_dist.all_reduce(x, op=torch_dist.ReduceOp.SUM)
        x /= world_size()
    return x


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of `x` over ranks, in place and returned (counts)."""
    if is_distributed():
        torch_dist.all_reduce(x, op=torch_dist.ReduceOp.SUM)
    return x


def row_offset(local_batch: int) -> int:
    """Index of this rank's first row in a tensor gathered from every rank (`rank * local_batch`)."""
    return rank() * local_batch if is_distributed() else 0
