"""Multi-view transforms: SimCLR-style pairs and DINO-style multi-crop.

Both are transforms (PIL image or uint8 tensor) -> list of `[C,H,W]` tensors; use them as `ImageField(..., out_key="views")`.
The batch then holds `views`: a list of `[B,C,H,W]` tensors, global crops first.
"""
from __future__ import annotations

import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from .device_augment import gaussian_blur
from .image import CenterCropFloor, eval_transform, to_tensor


class SeparableGaussianBlur(v2.GaussianBlur):
    """v2.GaussianBlur (same sigma draw, same reflect padding) computed as two 1-D passes of k taps
    instead of one k x k convolution: the Gaussian is the outer product of two 1-D ones, so the
    picture is the same to rounding. torchvision's 2-D pass costs about 30 ms a 224 px image at 23 taps
    on one core, most of what a worker spends on SimCLR's views (benchmarks/worker_load.py). Below
    `SEPARABLE_FROM` taps the one 2-D pass is the faster (the two passes' fixed cost dominates)."""

    SEPARABLE_FROM = 9

    def transform(self, inpt, params: dict):
        pil = isinstance(inpt, Image.Image)
        k = self.kernel_size[0]
        if (k != self.kernel_size[1] or k < self.SEPARABLE_FROM
                or not (pil or (isinstance(inpt, torch.Tensor) and inpt.ndim == 3))):
            return super().transform(inpt, params)
        x = v2.functional.pil_to_tensor(inpt) if pil else inpt
        out = gaussian_blur(x.unsqueeze(0).float(), k, torch.tensor(params["sigma"][:1]))[0]
        out = out.to(x.dtype) if x.is_floating_point() else out.round_().to(x.dtype)
        if pil:
            return v2.functional.to_pil_image(out, mode=inpt.mode)
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out


def ssl_augment(size: int, scale=(0.08, 1.0), blur: float = 0.5, solarize: float = 0.0,
                color: float = 1.0) -> v2.Compose:
    """The SimCLR/BYOL augmentation: crop, flip, colour jitter, grayscale, blur, optional solarize.

    `color` scales the jitter (SimCLR's strength s: brightness and contrast 0.4 s, saturation
    0.2 s, hue 0.1 s); 0 leaves intensities alone.
    """
    steps = [v2.RandomResizedCrop(size, scale=scale, antialias=True), v2.RandomHorizontalFlip()]
    if color > 0:
        steps += [v2.RandomApply([v2.ColorJitter(0.4 * color, 0.4 * color, 0.2 * color, 0.1 * color)], p=0.8),
                  v2.RandomGrayscale(p=0.2)]
    if blur > 0:
        kernel = max(3, (size // 10) | 1)  # about 10% of the image, odd
        steps.append(v2.RandomApply([SeparableGaussianBlur(kernel, sigma=(0.1, 2.0))], p=blur))
    if solarize > 0:
        steps.append(v2.RandomSolarize(threshold=128, p=solarize))
    return v2.Compose(steps + [to_tensor()])


def _flip_and_shift(size: int, flip: bool) -> list:
    """Resize the shorter side to `size` and centre-crop `size` (`weak_eval_transform`, what evaluation
    sees), random horizontal flip, a random translation of up to 12.5% of the side (reflect-pad and
    crop back). No zoom: the views keep the whole image's scale, as evaluation must."""
    steps = [v2.Resize(size, antialias=True), CenterCropFloor(size)] + ([v2.RandomHorizontalFlip()] if flip else [])
    return steps + [v2.RandomCrop(size, padding=max(1, round(size * 0.125)), padding_mode="reflect")]


def weak_augment(size: int, flip: bool = True) -> v2.Compose:
    """FixMatch's weak view: flip and shift (`_flip_and_shift`), normalise."""
    return v2.Compose(_flip_and_shift(size, flip) + [to_tensor()])


def weak_eval_transform(size: int) -> v2.Compose:
    """The weak view without its randomness: how a model trained on it is evaluated. The usual
    `eval_transform(size)` zooms in by 1 / 0.875 before its centre crop, a scale these views never
    show the model (a random resized crop does)."""
    return eval_transform(size, resize=size)


class RandomMagnitudeRandAugment(v2.Transform):
    """RandAugment (Cubuk et al. 2020) as FixMatch uses it: `ops` operations chosen at random, at a
    magnitude drawn at random for each image (from `bins` levels) instead of one fixed magnitude."""

    def __init__(self, ops: int = 2, bins: int = 10):
        super().__init__()
        self.bins = bins
        self.augment = v2.RandAugment(num_ops=ops, num_magnitude_bins=bins + 1)

    def forward(self, *inputs):
        import torch

        self.augment.magnitude = int(torch.randint(self.bins + 1, ()))
        return self.augment(*inputs)


def strong_augment(size: int, ops: int = 2, cutout: float = 0.5, flip: bool = True) -> v2.Compose:
    """FixMatch's strong view: the weak view's flip and translation, RandAugment with a random
    magnitude, then Cutout: one square of side up to `cutout` x `size` set to the mean colour (0
    after normalisation). `cutout=0` leaves it out."""
    steps = _flip_and_shift(size, flip) + [RandomMagnitudeRandAugment(ops), to_tensor()]
    if cutout > 0:
        steps.append(v2.RandomErasing(p=1.0, scale=(0.01, cutout ** 2), ratio=(1.0, 1.0), value=0))
    return v2.Compose(steps)


class TwoViews:
    """Two independent augmentations of one image (SimCLR, MoCo, BYOL, SimSiam, Barlow Twins, VICReg)."""

    def __init__(self, first, second=None):
        self.first = first
        self.second = second or first

    def __call__(self, img):
        return [self.first(img), self.second(img)]


class MultiCrop:
    """`n_global` large crops then `n_local` small crops (DINO, SwAV)."""

    def __init__(self, global_size=224, local_size=96, n_global=2, n_local=6,
                 global_scale=(0.4, 1.0), local_scale=(0.05, 0.4), color: float = 1.0, blur: float = 0.5,
                 solarize: float = 0.0):
        self.global_t = ssl_augment(global_size, global_scale, blur=blur, solarize=solarize, color=color)
        self.local_t = ssl_augment(local_size, local_scale, blur=blur, solarize=solarize, color=color)
        self.n_global, self.n_local = n_global, n_local

    def __call__(self, img):
        return [self.global_t(img) for _ in range(self.n_global)] + [self.local_t(img) for _ in range(self.n_local)]
