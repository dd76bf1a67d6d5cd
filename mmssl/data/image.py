"""Images: decode (torchvision.io where it is faster, Pillow otherwise) and torchvision v2 transforms.

`ImageField(transform)` reads the first of jpg/jpeg/png/webp/bmp/gif and returns `image [C,H,W]`
(float, normalised). Transparent images are composited on white, so cut-outs keep their shape.
"""
from __future__ import annotations

import io
import warnings
from typing import Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.io import ImageReadMode
from torchvision.io import decode_image as tv_decode
from torchvision.transforms import v2

from .fields import SkipSample, member

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageTooLarge(ValueError):
    """More pixels than the budget allows; raised from the header, before the pixels are decoded."""


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float greyscale -> 8-bit 'L', scaled to its range, not clipped.

    Pillow's convert('RGB') clips such images at 255, which turns most 16-bit photos white.
    """
    arr = np.asarray(img)
    if img.mode.startswith("I;16") or (img.mode == "I" and 255 < arr.max() <= 65535):
        out = arr.astype(np.float64) / 257.0  # 65535 -> 255
    elif img.mode == "F" and arr.size and float(np.nanmax(arr)) <= 1.0:
        out = np.nan_to_num(arr.astype(np.float64)) * 255.0
    elif arr.size and arr.max() > 255:  # 32-bit data beyond 16 bits: scale by its own maximum
        out = np.nan_to_num(arr.astype(np.float64)) * (255.0 / float(np.nanmax(arr)))
    else:
        out = arr.astype(np.float64)
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), "L")


def _open(data: bytes, max_pixels: int | None) -> Image.Image:
    """Pillow's lazy open: the header only. Over `max_pixels` (or Pillow's own bomb limit) ->
    `ImageTooLarge`, before any pixel is decoded."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exn:
            raise ImageTooLarge(str(exn)) from None
    if max_pixels and img.size[0] * img.size[1] > max_pixels:
        raise ImageTooLarge(f"{img.size[0]}x{img.size[1]} pixels is over the budget of {max_pixels}")
    return img


def decode_image(data: bytes, draft_size: int | None = None, max_pixels: int | None = None) -> Image.Image:
    """Bytes -> RGB PIL image. `draft_size` lets JPEG decode at a reduced scale (much faster);
    `max_pixels` refuses larger images (`ImageTooLarge`) from the header alone, so memory stays
    bounded. High-bit-depth greyscale is scaled to 8 bits."""
    img = _open(data, max_pixels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        if draft_size and img.format == "JPEG":
            img.draft("RGB", (draft_size, draft_size))
        img.load()
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        img = _to_8bit(img)
    if img.mode in ("RGBA", "LA", "P", "PA"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def plain_jpeg(img: Image.Image) -> bool:
    """An 8-bit RGB or grey JPEG, from its header: what torchvision.io decodes (libjpeg-turbo on a
    CPU, nvJPEG on a GPU); CMYK JPEGs are left to Pillow."""
    return img.format == "JPEG" and img.mode in ("RGB", "L")


def decode_for_transform(data: bytes, draft_size: int | None = None,
                         max_pixels: int | None = None) -> torch.Tensor | Image.Image:
    """Bytes -> what the v2 transforms take, by the faster decoder that gives the same picture.

    Opaque 8-bit JPEG (RGB or grey) and PNG (RGB, grey, palette) -> a uint8 `[3, H, W]` tensor
    from torchvision.io (libjpeg-turbo, libpng), faster than Pillow in benchmarks/decode.py.
    Everything else -> the RGB PIL image of `decode_image`: transparency (composited on white;
    torchvision's RGBA decode plus a composite on the tensor measured slower than Pillow's), 16-bit
    (scaled), CMYK, other formats, a file torchvision refuses (so the error types hold), and JPEGs
    at least four times `draft_size` on each side, where Pillow's draft mode is the faster."""
    img = _open(data, max_pixels)
    # A palette Pillow reads as opaque is opaque here too, whatever libpng makes of its chunks.
    opaque = ((plain_jpeg(img) and not (draft_size and min(img.size) >= 4 * draft_size))
              or (img.format == "PNG" and (img.mode in ("RGB", "L") or (img.mode == "P" and "transparency" not in img.info))))
    if opaque:
        try:
            pixels = tv_decode(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        except RuntimeError:  # truncated or damaged: Pillow names it (or reads what it can) below
            pixels = None
        if pixels is not None and pixels.dtype == torch.uint8:
            return pixels
    return decode_image(data, draft_size, max_pixels)


def to_tensor(mean=IMAGENET_MEAN, std=IMAGENET_STD) -> v2.Compose:
    return v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])


def train_transform(size: int = 224, scale=(0.2, 1.0), flip: bool = True, color: float = 0.0) -> v2.Compose:
    """Random resized crop, flip and optional colour jitter (strength `color`), then normalise."""
    steps = [v2.RandomResizedCrop(size, scale=scale, antialias=True)]
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    if color > 0:
        steps.append(v2.RandomApply([v2.ColorJitter(0.4 * color, 0.4 * color, 0.2 * color, 0.1 * color)], p=0.8))
    return v2.Compose(steps + [to_tensor()])


class CenterCropFloor(torch.nn.Module):
    """Centre crop whose offset rounds down, (h - size) // 2, as transformers' image processors and
    PIL do; torchvision's CenterCrop rounds half to even, one pixel off whenever the margin is odd."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, img):
        h, w = v2.functional.get_size(img)
        return v2.functional.crop(img, (h - self.size) // 2, (w - self.size) // 2, self.size, self.size)


def eval_transform(size: int = 224, resize: int | None = None) -> v2.Compose:
    """Resize the shorter side (to size/0.875 by default), centre crop, normalise: what the saved
    `preprocessor_config.json` of a trained tower does (mmssl.models.encoders.save_image_processor)."""
    resize = resize or int(round(size / 0.875))
    return v2.Compose([v2.Resize(resize, antialias=True), CenterCropFloor(size), to_tensor()])


def tensor_to_pil(chw: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> Image.Image:
    """A normalised `[3,H,W]` tensor back to a PIL image, for previews and report grids."""
    m, s = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    x = (chw.detach().cpu().float() * s + m).clamp(0, 1).mul(255).byte().permute(1, 2, 0).numpy()
    return Image.fromarray(x)


class ImageField:
    """First image member -> `{out_key: transform(image)}`; corrupt bytes -> SkipSample('corrupt_image').

    `transform` receives a uint8 `[3, H, W]` tensor where torchvision.io decodes the file and an RGB
    PIL image otherwise (`decode_for_transform`); every torchvision v2 transform takes both. A
    transform written for PIL images alone takes `decoder="pillow"`."""

    extensions = IMAGE_EXTENSIONS

    def __init__(self, transform, out_key: str = "image", draft_size: int | None = None,
                 decoder: Literal["fast", "pillow"] = "fast"):
        if decoder not in ("fast", "pillow"):
            raise ValueError(f"decoder is fast or pillow, got '{decoder}'")
        self.transform = transform
        self.out_key = out_key
        self.draft_size = draft_size
        self.decode_bytes = decode_for_transform if decoder == "fast" else decode_image

    def decode(self, sample: dict) -> dict:
        data = member(sample, self.extensions, "image")
        try:
            img = self.decode_bytes(data, self.draft_size)
        except ImageTooLarge as exn:
            raise SkipSample("image_too_large", f"{sample['__key__']}: {exn}") from None
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exn:
            raise SkipSample("corrupt_image", f"{sample['__key__']}: {exn}") from None
        return {self.out_key: self.transform(img)}
