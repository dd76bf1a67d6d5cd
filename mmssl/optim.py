"""Optimisers and step-counted schedules shared by every recipe.

- `param_groups`: no weight decay on biases and normalisation parameters (1-D tensors), as in
  every modern SSL recipe, per-submodule learning-rate multipliers, and submodules whose rate the
  schedule leaves alone (`fixed_lr`: SimSiam's predictor).
- `LARS` (You et al. 2017, https://arxiv.org/abs/1708.03888): SGD with momentum and a per-layer
  trust ratio, skipped for the no-decay group as in SimCLR/BYOL.
- `sgd`: SGD with momentum 0.9, the optimiser of SimSiam, MoCo v2 and the pretext-task papers.
- `warmup_cosine`: linear warmup, then cosine decay to `final_ratio * lr`.

Every optimiser `build_optimizer` returns can skip an update on the device: set its `found_inf`
(a 0-d float tensor, nonzero = skip) before `step()`, and parameters, moments and step counts stay
as they were, with no host synchronisation. This is the protocol of PyTorch's fused kernels (used
for AdamW and SGD wherever the device has them) and of `torch.amp.GradScaler`; `LARS` follows it.
`mmssl.train.fit` uses it to drop an update whose loss or gradient is not finite.
"""
from __future__ import annotations

import math

import torch


def param_groups(module: torch.nn.Module, weight_decay: float, lr: float,
                 lr_multipliers: dict[str, float] | None = None, fixed_lr=()) -> list[dict]:
    """Decay and no-decay groups, each split again by `lr_multipliers`: {submodule prefix: factor},
    and by `fixed_lr`: submodule prefixes whose groups carry `"fixed_lr": True`.

    A parameter whose name starts with `prefix + "."` gets `lr * factor`. `mmssl.train.fit`
    schedules every group alike, so the ratio holds for the whole run (BYOL's predictor
    multiplier), except the fixed groups, which keep their rate from the first step to the last.
    """
    lr_multipliers = lr_multipliers or {}
    groups: dict[tuple[bool, float, bool], list] = {}
    unmatched = set(lr_multipliers) | set(fixed_lr)
    for name, p in module.named_parameters():
        prefix = next((q for q in lr_multipliers if name.startswith(q + ".")), None)
        fixed = next((q for q in fixed_lr if name.startswith(q + ".")), None)
        unmatched.difference_update((prefix, fixed))
        if not p.requires_grad:
            continue
        no_decay = p.ndim <= 1 or name.endswith(".bias")
        groups.setdefault((no_decay, lr_multipliers.get(prefix, 1.0), fixed is not None), []).append(p)
    if unmatched:
        raise ValueError(f"lr_multipliers or fixed_lr names '{sorted(unmatched)[0]}', which is no submodule with parameters")
    return [{"params": params, "weight_decay": 0.0 if no_decay else weight_decay, "lr": lr * mult,
             "lars_exclude": no_decay, "fixed_lr": fixed} for (no_decay, mult, fixed), params in groups.items()]


class LARS(torch.optim.Optimizer):
    """SGD + momentum whose update of each tensor is scaled by eta * ||w|| / ||g + wd * w||.

    Honours `grad_scale` and `found_inf` like PyTorch's fused optimisers (see the module docstring)."""

    _step_supports_amp_scaling = True

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.001):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars_exclude=False))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        scale, found_inf = getattr(self, "grad_scale", None), getattr(self, "found_inf", None)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad if scale is None else p.grad / scale
                if found_inf is not None:
                    # A skipped update leaves the buffer as it was; zeros stand in for the bad gradient.
                    g = torch.where(found_inf > 0, torch.zeros_like(g), g)
                if not group["lars_exclude"]:
                    g = g.add(p, alpha=group["weight_decay"])
                    w_norm, g_norm = torch.norm(p), torch.norm(g)
                    trust = torch.where((w_norm > 0) & (g_norm > 0), group["eta"] * w_norm / g_norm, torch.ones_like(w_norm))
                    g = g.mul(trust)
                buf = self.state[p].get("momentum_buffer")
                if buf is None:
                    buf = self.state[p]["momentum_buffer"] = torch.zeros_like(p)
                    momentum = 0.0
                else:
                    momentum = group["momentum"]
                if found_inf is None:
                    buf.mul_(momentum).add_(g)
                    p.add_(buf, alpha=-group["lr"])
                else:
                    keep = found_inf > 0
                    buf.copy_(torch.where(keep, buf, buf * momentum + g))
                    p.sub_(torch.where(keep, torch.zeros_like(buf), buf * group["lr"]))
        return loss


def build_optimizer(module: torch.nn.Module, name: str, lr: float, weight_decay: float, betas=(0.9, 0.999),
                    lr_multipliers: dict[str, float] | None = None, fixed_lr=()):
    """`lr_multipliers` and `fixed_lr` as in `param_groups`; an objective declares them as its
    `lr_multipliers` and `fixed_lr` attributes."""
    groups = param_groups(module, weight_decay, lr, lr_multipliers, fixed_lr)
    if name == "lars":
        return LARS(groups, lr=lr, weight_decay=weight_decay)
    for g in groups:
        g.pop("lars_exclude", None)
    if name == "adamw":
        return _fused_where_available(torch.optim.AdamW, groups, lr=lr, betas=tuple(betas))
    if name == "sgd":
        opt = _fused_where_available(torch.optim.SGD, groups, lr=lr, momentum=0.9)
        opt.register_step_pre_hook(_zero_momentum_buffers)
        return opt
    raise ValueError(f"optimizer must be 'adamw', 'lars' or 'sgd', got '{name}'")


def _fused_where_available(cls, groups, **kwargs) -> torch.optim.Optimizer:
    """PyTorch's fused kernel (one launch per step, device-side `found_inf`), or the default
    implementation where the parameters' device or dtype has none."""
    try:
        return cls(groups, fused=True, **kwargs)
    except (RuntimeError, ValueError):
        return cls(groups, **kwargs)


def _zero_momentum_buffers(optimizer, args, kwargs) -> None:
    """The fused SGD kernel allocates momentum buffers without filling them when it skips the first
    step; zeros (made where the parameter now lives) make that step `buf = grad`, as PyTorch's is."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is not None and "momentum_buffer" not in optimizer.state[p]:
                optimizer.state[p]["momentum_buffer"] = torch.zeros_like(p)


def skips_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """Whether `optimizer` (or the one an accelerate wrapper holds) honours `found_inf`."""
    inner = getattr(optimizer, "optimizer", optimizer)
    return bool(getattr(inner, "_step_supports_amp_scaling", False))


def group_schedules(optimizer: torch.optim.Optimizer, schedule) -> list:
    """One lr multiplier function per parameter group, for `LambdaLR`: `schedule` for every group
    but those `param_groups` marked `fixed_lr`, which stay at their base rate."""
    return [(lambda step: 1.0) if g.get("fixed_lr") else schedule for g in optimizer.param_groups]


def warmup_cosine(step: int, total: int, warmup: int, final_ratio: float = 0.0) -> float:
    """Multiplier of the base lr at `step` (0-based)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def cosine_schedule(progress: float, start: float, end: float) -> float:
    """A value moving from `start` to `end` along a half cosine as progress goes 0 -> 1 (EMA momentum)."""
    return end - (end - start) * 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, progress))))
