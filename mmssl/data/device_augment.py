"""The SimCLR/BYOL augmentation of a whole batch on the device that trains (GPU-side augmentation).

`ssl_augment` (mmssl.data.views) augments one image at a time in the data workers; on a GPU those
workers can become the limit. Here the workers only decode and resize (`load_transform`: uint8
`[3, L, L]` squares) and `DeviceAugment` draws every view of the batch at once on the batch's
device, with ssl_augment's operations and ranges:

- random resized crop: area share in `scale`, aspect ratio 3/4 to 4/3, torchvision's ten tries
  then its centre-crop fallback; box-averaged resampling (torchvision.ops.roi_align with adaptive
  sampling), which antialiases a downscale as `antialias=True` does;
- horizontal flip (p 0.5);
- colour jitter (p 0.8; brightness and contrast 0.4 s, saturation 0.2 s, hue 0.1 s for strength
  `color` = s) as torchvision computes each; the four run in one random order per batch, where
  torchvision draws an order per image;
- grayscale (p 0.2), Gaussian blur (p `blur`, sigma 0.1 to 2, kernel about 10% of the side,
  reflect padding), solarize (p `solarize`, at 128/255); then ImageNet normalisation.

Every random number comes from a CPU generator seeded by the caller (`mmssl.train.fit` passes one
seed per run seed, step, micro-step and rank), so a resumed run augments exactly as the run it
continues, the same seed gives the same views on any device, and drawing them reads nothing back
from the GPU.
"""
from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align
from torchvision.transforms import v2

from .image import IMAGENET_MEAN, IMAGENET_STD, CenterCropFloor


def load_transform(size: int) -> v2.Compose:
    """What the workers do before `DeviceAugment`: the shorter side resized to `size`, the centre
    square cropped; -> uint8 `[3, size, size]`."""
    return v2.Compose([v2.ToImage(), v2.Resize(size, antialias=True), CenterCropFloor(size)])


def crop_boxes(n: int, h: int, w: int, scale: tuple[float, float], ratio: tuple[float, float],
               gen: torch.Generator, tries: int = 10) -> torch.Tensor:
    """`[n, 4]` crop boxes (x1, y1, x2, y2, pixel edges) drawn as v2.RandomResizedCrop draws one:
    the first of `tries` (area, log-ratio) draws that fits, else the centre crop at the nearest
    allowed ratio."""
    area = h * w
    target = torch.empty(n, tries).uniform_(scale[0], scale[1], generator=gen) * area
    aspect = torch.empty(n, tries).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=gen).exp()
    cw, ch = (target * aspect).sqrt().round(), (target / aspect).sqrt().round()
    fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = fits.int().argmax(1, keepdim=True)  # the first try that fits (0 where none does)
    cw, ch = cw.gather(1, first).squeeze(1), ch.gather(1, first).squeeze(1)
    found = fits.any(1)
    if w / h < ratio[0]:
        fw, fh = w, round(w / ratio[0])
    elif w / h > ratio[1]:
        fw, fh = round(h * ratio[1]), h
    else:
        fw, fh = w, h
    cw, ch = torch.where(found, cw, float(fw)), torch.where(found, ch, float(fh))
    top = (torch.rand(n, generator=gen) * (h - ch + 1)).floor()
    left = (torch.rand(n, generator=gen) * (w - cw + 1)).floor()
    top, left = torch.where(found, top, ((h - ch) / 2).floor()), torch.where(found, left, ((w - cw) / 2).floor())
    return torch.stack([left, top, left + cw, top + ch], 1)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """`[B, 3, H, W]` in [0, 1] -> `[B, 1, H, W]` luma (torchvision's, which takes a batch)."""
    return v2.functional.rgb_to_grayscale(x, num_output_channels=1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's blend, one factor per image: factor * x + (1 - factor) * other, in [0, 1]."""
    f = factor.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * other).clamp(0, 1)


# torchvision's adjust_hue shifts a whole batch by one factor and its HSV conversions are private,
# so the per-image shift has its own pair.
def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    delta = maxc - minc
    s = delta / torch.where(maxc == 0, torch.ones_like(maxc), maxc)
    d = torch.where(delta == 0, torch.ones_like(delta), delta)
    rc, gc, bc = (maxc - r) / d, (maxc - g) / d, (maxc - b) / d
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta == 0, torch.zeros_like(h), (h / 6.0) % 1.0)
    return torch.stack([h, s, maxc], 1)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.long() % 6
    p, q, t = (v * (1 - s)).clamp(0, 1), (v * (1 - s * f)).clamp(0, 1), (v * (1 - s * (1 - f))).clamp(0, 1)
    # (r, g, b) for each of the six sectors of the hue circle
    table = torch.stack([torch.stack(c, 1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))], 1)
    return table.gather(1, i[:, None, None].expand(-1, 1, 3, *i.shape[1:])).squeeze(1)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate each image's hue by its `shift` (a share of the circle, -0.5 to 0.5), as torchvision."""
    hsv = _rgb_to_hsv(x)
    hsv = torch.cat([(hsv[:, :1] + shift.view(-1, 1, 1, 1)) % 1.0, hsv[:, 1:]], 1)
    return _hsv_to_rgb(hsv)


def gaussian_blur(x: torch.Tensor, kernel: int, sigma: torch.Tensor) -> torch.Tensor:
    """Blur image i of `[B, C, H, W]` with a `kernel`-tap Gaussian of `sigma[i]`, separably, with
    reflect padding, as v2.functional.gaussian_blur does for one image. Sigma 0 leaves an image
    unchanged: the odd kernel's centre tap then holds all the weight."""
    b, c, h, w = x.shape
    half = (kernel - 1) / 2
    taps = torch.linspace(-half, half, kernel, device=x.device)
    weights = torch.exp(-0.5 * (taps / sigma.clamp_min(1e-6).view(-1, 1)) ** 2)
    weights = weights / weights.sum(1, keepdim=True)
    weights = weights.repeat_interleave(c, 0)  # [B*C, kernel]: one filter per channel of each image
    flat = F.pad(x.reshape(1, b * c, h, w), [kernel // 2] * 4, mode="reflect")
    flat = F.conv2d(flat, weights.view(b * c, 1, 1, kernel), groups=b * c)
    flat = F.conv2d(flat, weights.view(b * c, 1, kernel, 1), groups=b * c)
    return flat.view(b, c, h, w)


class DeviceAugment:
    """uint8 `[B, 3, L, L]` on any device -> `views` lists of normalised float `[B, 3, size, size]`.

    Each of the `views` views is an independent draw of the augmentation for every image."""

    def __init__(self, size: int, scale=(0.08, 1.0), blur: float = 0.5, solarize: float = 0.0, color: float = 1.0,
                 views: int = 2, ratio=(3 / 4, 4 / 3)):
        self.size, self.scale, self.ratio, self.views = size, tuple(scale), tuple(ratio), views
        self.blur, self.solarize, self.color = blur, solarize, color
        self.kernel = max(3, (size // 10) | 1)  # ssl_augment's kernel

    def __call__(self, images: torch.Tensor, seed: int) -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        order = random.Random(seed)
        x = images.float().div_(255)
        return [self.one_view(x, gen, order) for _ in range(self.views)]

    def one_view(self, x: torch.Tensor, gen: torch.Generator, order: random.Random) -> torch.Tensor:
        n, _, h, w = x.shape
        dev = x.device

        def draw(low: float, high: float) -> torch.Tensor:
            return torch.empty(n).uniform_(low, high, generator=gen)

        def chance(p: float) -> torch.Tensor:
            return torch.rand(n, generator=gen) < p

        boxes = torch.cat([torch.arange(n, dtype=torch.float32)[:, None],
                           crop_boxes(n, h, w, self.scale, self.ratio, gen)], 1)
        out = roi_align(x, boxes.to(dev, non_blocking=True), (self.size, self.size), 1.0, -1, aligned=True)
        flip = chance(0.5).to(dev, non_blocking=True).view(-1, 1, 1, 1)
        out = torch.where(flip, out.flip(3), out)
        if self.color > 0:
            s, jitter = self.color, chance(0.8)
            factors = {"brightness": draw(max(0.0, 1 - 0.4 * s), 1 + 0.4 * s),
                       "contrast": draw(max(0.0, 1 - 0.4 * s), 1 + 0.4 * s),
                       "saturation": draw(max(0.0, 1 - 0.2 * s), 1 + 0.2 * s),
                       "hue": draw(-min(0.5, 0.1 * s), min(0.5, 0.1 * s))}
            for name in factors:  # an image left unjittered gets the factor that changes nothing
                factors[name] = torch.where(jitter, factors[name], 0.0 if name == "hue" else 1.0).to(dev, non_blocking=True)
            for name in order.sample(list(factors), len(factors)):
                if name == "brightness":
                    out = _blend(out, torch.zeros_like(out), factors[name])
                elif name == "contrast":
                    out = _blend(out, grayscale(out).mean((1, 2, 3), keepdim=True), factors[name])
                elif name == "saturation":
                    out = _blend(out, grayscale(out), factors[name])
                else:
                    out = adjust_hue(out, factors[name])
            gray = chance(0.2).to(dev, non_blocking=True).view(-1, 1, 1, 1)
            out = torch.where(gray, grayscale(out).expand_as(out), out)
        if self.blur > 0:  # sigma 0 is the identity filter: one pass for the whole batch
            sigma = torch.where(chance(self.blur), draw(0.1, 2.0), 0.0)
            out = gaussian_blur(out, self.kernel, sigma.to(dev, non_blocking=True))
        if self.solarize > 0:
            solar = chance(self.solarize).to(dev, non_blocking=True).view(-1, 1, 1, 1)
            out = torch.where(solar & (out >= 128 / 255), 1 - out, out)
        mean, std = out.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1), out.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (out - mean) / std
