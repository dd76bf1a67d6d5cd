"""Temporal order: learn a frame encoder by telling the true order of frames from a wrong one.

Two tasks share the sampling and the frame encoder:

- `verify`, Shuffle and Learn (Misra et al. 2016, https://arxiv.org/abs/1603.08561). Five frames
  a < b < c < d < e are taken from a clip; the tuple (b, c, d) or (d, c, b) is "in order", (b, a, d)
  or (b, e, d) is "shuffled" (half of each, so chance is 50%). A shared encoder embeds the three
  frames and a classifier on their concatenation says which.
- `sort`, order prediction (Lee et al. 2017, "Unsupervised Representation Learning by Sorting
  Sequences", https://arxiv.org/abs/1708.01246). Four ordered frames are shuffled by one of 24
  permutations; a permutation and its reverse form one class (12 classes, chance 1/12), since
  forwards and backwards are equally plausible. Features of every frame pair are fused by a
  shared MLP (the paper's pairwise feature extraction) and a linear layer names the class.

Fusion. How the frame features meet the classifier: `concat`, as in both papers (the verify
classifier sees [f_1, f_2, f_3]; a sort pair is [f_i, f_j]), or `difference` (the default): the
verify classifier sees the steps [f_2 - f_1, f_3 - f_2] and a sort pair is f_j - f_i, the
"difference" fusion that Fernando et al. found best for odd-one-out learning (O3N,
https://arxiv.org/abs/1611.06646). On the motion set at CPU-demo scale `concat` stays at chance
while `difference` learns (benchmarks/video_table.py, tests/test_video_recipes.py): telling
"between" from "outside" asks concat's MLP to learn a comparison of distances from scratch; with
differences the comparison is one layer away.

Sampling. The paper samples from high-motion windows (optical flow). We use the simpler rule of
weighting each candidate window by its mean absolute frame difference, so still stretches of a
clip are rarely used and, on clips that move evenly, every window is equally likely. Frames are
spaced `gap` apart, `gap` drawn uniformly from 1..max (the widest that fits the clip).
Everything is drawn in the model with torch's RNG, like MAE's masks.
"""
from __future__ import annotations

from typing import Literal

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from ..collapse import embedding_std
from ..models.heads import mlp

# The 12 classes of `sort`: permutations of 4 frames whose first index is below their last; a
# permutation with first > last is its own reverse's class.
ORDER_CLASSES = [p for p in itertools.permutations(range(4)) if p[0] < p[-1]]


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


def verify_tuples(idx5: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """idx5 [B, 5] (a..e) -> (indices [B, 3], label [B]: 1 = in order). Half in order, (b,c,d) or
    (d,c,b); half shuffled, (b,a,d) or (b,e,d)."""
    b = idx5.shape[0]
    choices = torch.tensor([[1, 2, 3], [3, 2, 1], [1, 0, 3], [1, 4, 3]], device=idx5.device)
    kind = torch.randint(0, 4, (b,), device=idx5.device)
    return idx5.gather(1, choices[kind]), (kind < 2).long()


def sort_tuples(idx4: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """idx4 [B, 4] in time order -> (shuffled indices [B, 4], class [B] in 0..11)."""
    b = idx4.shape[0]
    perms = torch.tensor(ORDER_CLASSES, device=idx4.device)
    label = torch.randint(0, len(ORDER_CLASSES), (b,), device=idx4.device)
    order = perms[label]
    reverse = torch.rand(b, device=idx4.device) < 0.5
    order = torch.where(reverse[:, None], order.flip(1), order)
    return idx4.gather(1, order), label


class TemporalOrder(nn.Module):
    """frame_encoder: [N, C, H, W] -> [N, D] with `.out_dim`; batch `video` [B, T, C, H, W].

    Args:
        task: verify: is this frame order correct (Shuffle and Learn); sort: which of the orders is it
        hidden_dim: hidden width of the order classifier
        eval_frames: frames per clip whose features probes read
        fusion: how frame features are combined: pairwise differences (O3N) or concatenation
    """

    def __init__(self, frame_encoder: nn.Module, task: Literal["verify", "sort"] = "verify", hidden_dim: int = 512, eval_frames: int = 4,
                 fusion: Literal["difference", "concat"] = "difference"):
        super().__init__()
        if task not in ("verify", "sort"):
            raise ValueError(f"temporal_order.task must be 'verify' or 'sort', got '{task}'")
        if fusion not in ("difference", "concat"):
            raise ValueError(f"temporal_order.fusion must be 'difference' or 'concat', got '{fusion}'")
        self.backbone, self.task, self.eval_frames, self.fusion = frame_encoder, task, eval_frames, fusion
        d = frame_encoder.out_dim
        if task == "verify":
            self.classifier = mlp((3 if fusion == "concat" else 2) * d, hidden_dim, 2, layers=2, norm="none")
        else:
            self.pair = nn.Linear((2 if fusion == "concat" else 1) * d, hidden_dim)
            self.classifier = nn.Sequential(nn.ReLU(), nn.Linear(6 * hidden_dim, len(ORDER_CLASSES)))

    def fuse(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """Two frames' features [B, D] -> the pair's input [B, 2D] (concat) or [B, D] (difference)."""
        return torch.cat([first, second], 1) if self.fusion == "concat" else second - first

    def logits(self, video: torch.Tensor):
        """-> (logits [B, 2 or 12], labels [B], frame features [B, k, D])."""
        n = 5 if self.task == "verify" else 4
        idx, labels = (verify_tuples if self.task == "verify" else sort_tuples)(sample_windows(video, n))
        frames = gather_frames(video, idx)  # [B, k, C, H, W]
        b, k = frames.shape[:2]
        feats = self.backbone(frames.flatten(0, 1)).view(b, k, -1)
        if self.task == "verify":
            x = feats.flatten(1) if self.fusion == "concat" else torch.cat([self.fuse(feats[:, 0], feats[:, 1]),
                                                                           self.fuse(feats[:, 1], feats[:, 2])], 1)
            return self.classifier(x), labels, feats
        pairs = [self.pair(self.fuse(feats[:, i], feats[:, j])) for i, j in itertools.combinations(range(k), 2)]
        return self.classifier(torch.cat(pairs, 1)), labels, feats

    def forward(self, batch: dict, progress: float = 0.0) -> dict:
        logits, labels, feats = self.logits(batch["video"])
        return {"loss": F.cross_entropy(logits, labels), "acc": (logits.argmax(1) == labels).float().mean(),
                "embed_std": embedding_std(feats[:, 0])}

    @torch.no_grad()
    def video_features(self, video: torch.Tensor) -> torch.Tensor:
        """[B, T, C, H, W] -> [B, eval_frames * D]: `eval_frames` evenly spaced frames, encoded and
        concatenated in time order, so a probe can read the order."""
        return ordered_frame_features(self.backbone, video, self.eval_frames)


def ordered_frame_features(encoder: nn.Module, video: torch.Tensor, n: int) -> torch.Tensor:
    """[B, T, C, H, W] -> [B, n * D]: n evenly spaced frames through a frame encoder, concatenated."""
    b, t = video.shape[:2]
    idx = torch.linspace(0, t - 1, n, device=video.device).round().long()
    return encoder(video[:, idx].flatten(0, 1)).view(b, -1)
