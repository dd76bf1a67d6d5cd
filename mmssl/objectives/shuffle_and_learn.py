"""Shuffle and Learn: is this triple of frames in temporal order?

Paper: Misra, Zitnick and Hebert 2016, https://arxiv.org/abs/1603.08561. Five frames a < b < c < d
< e are taken from a clip (frame_tuples.sample_windows); the tuple (b, c, d) or (d, c, b) is "in
order", (b, a, d) or (b, e, d) is "shuffled" (half of each, so chance is 50%). A shared encoder
embeds the three frames and a classifier on their fused features says which: the two
frame-to-frame differences (`fusion: difference`, the default) or the concatenation (the paper's).
"""
from __future__ import annotations

import torch
from torch import nn

from ..models.heads import mlp
from .frame_tuples import (Fusion, check_fusion, encode_frames, fuse, order_outputs, ordered_frame_features,
                           sample_windows)


def verify_tuples(idx5: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """idx5 [B, 5] (a..e) -> (indices [B, 3], label [B]: 1 = in order). Half in order, (b,c,d) or
    (d,c,b); half shuffled, (b,a,d) or (b,e,d)."""
    b = idx5.shape[0]
    choices = torch.tensor([[1, 2, 3], [3, 2, 1], [1, 0, 3], [1, 4, 3]], device=idx5.device)
    kind = torch.randint(0, 4, (b,), device=idx5.device)
    return idx5.gather(1, choices[kind]), (kind < 2).long()


class ShuffleAndLearn(nn.Module):
    """frame_encoder: [N, C, H, W] -> [N, D] with `.out_dim`; batch `video` [B, T, C, H, W].

    Args:
        hidden_dim: hidden width of the order classifier
        eval_frames: frames per clip whose features probes read
        fusion: how frame features are combined: pairwise differences (O3N) or concatenation
    """

    def __init__(self, frame_encoder: nn.Module, hidden_dim: int = 512, eval_frames: int = 4,
                 fusion: Fusion = "difference"):
        super().__init__()
        check_fusion(fusion)
        self.backbone, self.eval_frames, self.fusion = frame_encoder, eval_frames, fusion
        d = frame_encoder.out_dim
        self.classifier = mlp((3 if fusion == "concat" else 2) * d, hidden_dim, 2, layers=2, norm="none")

    def logits(self, video: torch.Tensor):
        """-> (logits [B, 2], labels [B]: 1 = in order, frame features [B, 3, D])."""
        idx, labels = verify_tuples(sample_windows(video, 5))
        feats = encode_frames(self.backbone, video, idx)
        x = feats.flatten(1) if self.fusion == "concat" else torch.cat(
            [fuse(feats[:, 0], feats[:, 1], self.fusion), fuse(feats[:, 1], feats[:, 2], self.fusion)], 1)
        return self.classifier(x), labels, feats

    def forward(self, batch: dict, progress: float = 0.0) -> dict:
        return order_outputs(*self.logits(batch["video"]))

    @torch.no_grad()
    def video_features(self, video: torch.Tensor) -> torch.Tensor:
        """[B, T, C, H, W] -> [B, eval_frames * D]: evenly spaced frames, encoded and concatenated in
        time order, so a probe can read the order."""
        return ordered_frame_features(self.backbone, video, self.eval_frames)
