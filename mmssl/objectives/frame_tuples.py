"""Frame tuples for the temporal-order objectives (shuffle_and_learn.py, order_prediction.py): where
in a clip the frames are taken, how two frames' features are fused, and the ordered clip feature
their probes read.

Sampling. Shuffle and Learn samples from high-motion windows (optical flow). We use the simpler rule of
weighting each candidate window by its mean absolute frame difference, so still stretches of a
clip are rarely used and, on clips that move evenly, every window is equally likely. Frames are
spaced `gap` apart, `gap` drawn uniformly from 1..max (the widest that fits the clip).
Everything is drawn in the model with torch's RNG, like MAE's masks.

Fusion. How the frame features meet the classifier: `concat`, as in both papers (the verify
classifier sees [f_1, f_2, f_3]; a sort pair is [f_i, f_j]), or `difference` (the default): the
verify classifier sees the steps [f_2 - f_1, f_3 - f_2] and a sort pair is f_j - f_i, the
"difference" fusion that Fernando et al. found best for odd-one-out learning (O3N,
https://arxiv.org/abs/1611.06646). On the motion set at CPU-demo scale `concat` stays at chance
while `difference` learns (benchmarks/video_table.py, tests/test_video_recipes.py): telling
"between" from "outside" asks concat's MLP to learn a comparison of distances from scratch; with
differences the comparison is one layer away.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Fusion = Literal["difference", "concat"]


def frame_motion(video: torch.Tensor) -> torch.Tensor:
    """[B, T, C, H, W] -> [B, T-1] mean absolute difference between consecutive frames."""
    return (video[:, 1:] - video[:, :-1]).abs().flatten(2).mean(-1)


def sample_windows(video: torch.Tensor, n: int) -> torch.Tensor:
    """Indices [B, n] of n equally spaced frames per clip, in time order (see the module docstring)."""
    b, t = video.shape[:2]
    if t < n:
        raise ValueError(f"temporal order needs clips of at least {n} frames, got {t}")
    max_gap = (t - 1) // (n - 1)
    gap = torch.randint(1, max_gap + 1, (b,), device=video.device)
    steps = frame_motion(video)  # [B, T-1]
    csum = F.pad(steps.cumsum(1), (1, 0))  # csum[:, i] = motion before frame i
    starts = torch.arange(t, device=video.device).expand(b, t)
    ends = starts + gap[:, None] * (n - 1)
    valid = ends < t
    energy = csum.gather(1, ends.clamp(max=t - 1)) - csum.gather(1, starts)
    weight = torch.where(valid, energy + 1e-6, torch.zeros_like(energy))  # +eps: still clips stay usable
    start = torch.multinomial(weight, 1)  # [B, 1]
    return start + gap[:, None] * torch.arange(n, device=video.device)


def gather_frames(video: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """video [B, T, C, H, W], idx [B, k] -> [B, k, C, H, W]."""
    return video[torch.arange(video.shape[0], device=video.device)[:, None], idx]


def encode_frames(encoder: nn.Module, video: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """video [B, T, C, H, W], idx [B, k] -> the frames' features [B, k, D] through one encoder."""
    frames = gather_frames(video, idx)  # [B, k, C, H, W]
    b, k = frames.shape[:2]
    return encoder(frames.flatten(0, 1)).view(b, k, -1)


def fuse(first: torch.Tensor, second: torch.Tensor, fusion: str) -> torch.Tensor:
    """Two frames' features [B, D] -> the pair's input [B, 2D] (concat) or [B, D] (difference)."""
    return torch.cat([first, second], 1) if fusion == "concat" else second - first


def order_outputs(logits: torch.Tensor, labels: torch.Tensor, feats: torch.Tensor) -> dict:
    """What a temporal-order objective returns: cross-entropy, accuracy, and the spread of the
    first frame's features (the collapse monitor)."""
    from ..collapse import embedding_std

    return {"loss": F.cross_entropy(logits, labels), "acc": (logits.argmax(1) == labels).float().mean(),
            "embed_std": embedding_std(feats[:, 0])}


def check_fusion(fusion: str) -> None:
    if fusion not in ("difference", "concat"):
        raise ValueError(f"fusion must be 'difference' or 'concat', got '{fusion}'")


def ordered_frame_features(encoder: nn.Module, video: torch.Tensor, n: int) -> torch.Tensor:
    """[B, T, C, H, W] -> [B, n * D]: n evenly spaced frames through a frame encoder, concatenated."""
    b, t = video.shape[:2]
    idx = torch.linspace(0, t - 1, n, device=video.device).round().long()
    return encoder(video[:, idx].flatten(0, 1)).view(b, -1)
