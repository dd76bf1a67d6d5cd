"""Video: decord decode from bytes, clip sampling, resize and crop -> `video [T,C,H,W]`.

Readers are opened inside the worker, per sample (a reader made in the parent and used in a forked
worker hangs). Clip rule for short videos: a clip needs `(num_frames - 1) * stride + 1` frames; a
video with fewer frames is read as a loop (frame indices wrap around to the start), so a 10-frame
video still gives a 16-frame clip. Videos with fewer than `min_frames` frames are skipped as
`short_video`; unreadable bytes as `corrupt_video`; a stream with no frames as `empty_video`.
"""
from __future__ import annotations

import io

import torch
import torch.nn.functional as F

from .fields import SkipSample, member, randint
from .image import IMAGENET_MEAN, IMAGENET_STD

VIDEO_EXTENSIONS = ("mp4", "webm", "mkv", "avi", "mov")


def clip_indices(n_frames: int, num_frames: int, stride: int, random_start: bool) -> list[int]:
    """Frame indices of one clip; loops over short videos (see the module docstring)."""
    span = (num_frames - 1) * stride + 1
    if n_frames >= span:
        start = randint(n_frames - span + 1) if random_start else (n_frames - span) // 2
    else:
        start = 0
    return [(start + i * stride) % n_frames for i in range(num_frames)]


def open_video(data: bytes):
    """A decord VideoReader over in-memory bytes (one decode thread: workers give the parallelism)."""
    import decord

    return decord.VideoReader(io.BytesIO(data), ctx=decord.cpu(0), num_threads=1)


def resize_crop(frames: torch.Tensor, size: int, random_crop: bool) -> torch.Tensor:
    """`[T,C,H,W]` float -> shorter side `size`, then a `size x size` crop (random or centre)."""
    _, _, h, w = frames.shape
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    frames = F.interpolate(frames, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top = randint(nh - size + 1) if random_crop else (nh - size) // 2
    left = randint(nw - size + 1) if random_crop else (nw - size) // 2
    return frames[:, :, top : top + size, left : left + size]


class VideoField:
    """mp4 (or other container) member -> `video [T,C,H,W]`, normalised like the image encoders.

    Args:
        num_frames, stride: clip length and frame step.
        size: output height and width.
        train: random clip start, random crop and horizontal flip; otherwise centre clip and crop.
        min_frames: shorter videos are skipped (`short_video`) instead of looped.
    """

    extensions = VIDEO_EXTENSIONS

    def __init__(self, num_frames=16, stride=4, size=112, train=True, min_frames=1, out_key="video"):
        self.num_frames, self.stride, self.size = num_frames, stride, size
        self.train, self.min_frames, self.out_key = train, min_frames, out_key
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def read_clip(self, data: bytes, key: str) -> torch.Tensor:
        """Bytes -> uint8 `[T,H,W,C]` frames of one clip."""
        try:
            vr = open_video(data)
            n = len(vr)
        except Exception as exn:  # decord raises DECORDError or RuntimeError for bad containers
            raise SkipSample("corrupt_video", f"{key}: {str(exn)[-200:]}") from None
        if n == 0:
            raise SkipSample("empty_video", key)
        if n < self.min_frames:
            raise SkipSample("short_video", f"{key}: {n} frames < {self.min_frames}")
        idx = clip_indices(n, self.num_frames, self.stride, self.train)
        try:
            return torch.from_numpy(vr.get_batch(idx).asnumpy())
        except Exception as exn:
            raise SkipSample("corrupt_video", f"{key}: {str(exn)[-200:]}") from None

    def decode(self, sample: dict) -> dict:
        data = member(sample, self.extensions, "video")
        frames = self.read_clip(data, sample["__key__"])
        x = frames.permute(0, 3, 1, 2).float().div_(255)
        x = resize_crop(x, self.size, random_crop=self.train)
        if self.train and randint(2) == 1:
            x = x.flip(-1)
        return {self.out_key: (x - self.mean) / self.std}
