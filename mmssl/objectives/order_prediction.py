"""Order prediction: which of the 12 orders (up to reversal) were four frames shuffled into?

Paper: Lee, Huang, Singh and Yang 2017, "Unsupervised Representation Learning by Sorting
Sequences", https://arxiv.org/abs/1708.01246. Four ordered frames (frame_tuples.sample_windows)
are shuffled by one of 24 permutations; a permutation and its reverse form one class (12 classes,
chance 1/12), since forwards and backwards are equally plausible. The features of every frame pair
are fused (f_j - f_i with `fusion: difference`, the default; [f_i, f_j] with `concat`, the
paper's) by a shared layer, the paper's pairwise feature extraction, and a linear layer names
the class.
"""
from __future__ import annotations

import itertools

import torch
from torch import nn

from .frame_tuples import (Fusion, check_fusion, encode_frames, fuse, order_outputs, ordered_frame_features,
                           sample_windows)

# The 12 classes of `sort`: permutations of 4 frames whose first index is below their last; a
# permutation with first > last is its own reverse's class.
ORDER_CLASSES = [p for p in itertools.permutations(range(4)) if p[0] < p[-1]]


def sort_tuples(idx4: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """idx4 [B, 4] in time order -> (shuffled indices [B, 4], class [B] in 0..11)."""
    b = idx4.shape[0]
    perms = torch.tensor(ORDER_CLASSES, device=idx4.device)
    label = torch.randint(0, len(ORDER_CLASSES), (b,), device=idx4.device)
    order = perms[label]
    reverse = torch.rand(b, device=idx4.device) < 0.5
    order = torch.where(reverse[:, None], order.flip(1), order)
    return idx4.gather(1, order), label


class OrderPrediction(nn.Module):
    """frame_encoder: [N, C, H, W] -> [N, D] with `.out_dim`; batch `video` [B, T, C, H, W].

    Args:
        hidden_dim: width of the pairwise features
        eval_frames: frames per clip whose features probes read
        fusion: how frame features are combined: pairwise differences (O3N) or concatenation
    """

    def __init__(self, frame_encoder: nn.Module, hidden_dim: int = 512, eval_frames: int = 4,
                 fusion: Fusion = "difference"):
        super().__init__()
        check_fusion(fusion)
        self.backbone, self.eval_frames, self.fusion = frame_encoder, eval_frames, fusion
        d = frame_encoder.out_dim
        self.pair = nn.Linear((2 if fusion == "concat" else 1) * d, hidden_dim)
        self.classifier = nn.Sequential(nn.ReLU(), nn.Linear(6 * hidden_dim, len(ORDER_CLASSES)))

    def logits(self, video: torch.Tensor):
        """-> (logits [B, 12], labels [B], frame features [B, 4, D])."""
        idx, labels = sort_tuples(sample_windows(video, 4))
        feats = encode_frames(self.backbone, video, idx)
        pairs = [self.pair(fuse(feats[:, i], feats[:, j], self.fusion)) for i, j in itertools.combinations(range(4), 2)]
        return self.classifier(torch.cat(pairs, 1)), labels, feats

    def forward(self, batch: dict, progress: float = 0.0) -> dict:
        return order_outputs(*self.logits(batch["video"]))

    @torch.no_grad()
    def video_features(self, video: torch.Tensor) -> torch.Tensor:
        """[B, T, C, H, W] -> [B, eval_frames * D]: evenly spaced frames, encoded and concatenated in
        time order, so a probe can read the order."""
        return ordered_frame_features(self.backbone, video, self.eval_frames)
