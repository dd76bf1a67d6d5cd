"""Optical flow as a second view of a clip, computed on the CPU in the data workers.

`FlowField` decodes a clip as `VideoField` does (same crop and flip) and adds `flow [2 * pairs, H,
W]`: OpenCV's Farneback dense flow (Farneback 2003) between `pairs` evenly spaced pairs of
consecutive frames, (dx, dy) per pair stacked as channels, in units of `unit_px` pixels and clipped
to +-4 units (a very fast move is still "fast", not an outlier that dominates the input).
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from .video import VideoField

# Farneback settings of OpenCV's own dense-flow sample: pyramid scale 0.5, 3 levels, window 15,
# 3 iterations, polynomial neighbourhood 5 with sigma 1.2.
FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)


def farneback(frames: np.ndarray) -> np.ndarray:
    """uint8 grey frames [2, H, W] -> flow [H, W, 2] in pixels, from the first frame to the second."""
    return cv2.calcOpticalFlowFarneback(frames[0], frames[1], None, **FARNEBACK)


class FlowField:
    """mp4 member -> `video [T, C, H, W]` (as `VideoField`) and `flow [2 * pairs, H, W]`.

    Args:
        num_frames, stride, size, train, min_frames: as `VideoField`.
        pairs: consecutive frame pairs whose flow is stacked (evenly spaced over the clip).
        unit_px: flow is divided by this many pixels.
    """

    def __init__(self, num_frames=16, stride=1, size=64, train=True, min_frames=1, pairs=4, unit_px=2.0):
        if pairs < 1 or num_frames < 2:
            raise ValueError(f"flow needs pairs >= 1 and num_frames >= 2, got {pairs} and {num_frames}")
        self.video = VideoField(num_frames, stride, size, train=train, min_frames=min_frames)
        self.extensions = self.video.extensions
        self.pairs, self.unit_px = pairs, unit_px
        self.firsts = np.linspace(0, num_frames - 2, pairs).round().astype(int)

    def decode(self, sample: dict) -> dict:
        out = self.video.decode(sample)
        pixels = out["video"] * self.video.std + self.video.mean  # [T, 3, H, W] in [0, 1]
        grey = (pixels.clamp(0, 1) * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)
        grey = (grey * 255).round().to(torch.uint8).numpy()
        flows = [farneback(grey[t : t + 2]) for t in self.firsts]  # each [H, W, 2]
        flow = torch.from_numpy(np.concatenate(flows, axis=2)).permute(2, 0, 1) / self.unit_px
        return {**out, "flow": flow.clamp(-4, 4)}
