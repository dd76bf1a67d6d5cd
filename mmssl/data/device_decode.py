"""JPEG decoding on the device that trains (`augment.decode=device`, with `augment.on=device`).

With `augment.on=device` the workers decode each image and resize it to a `load_size` square
(mmssl.data.device_augment.load_transform). Here they only read its header: a plain JPEG (8-bit
RGB or grey, ending with its end-of-image marker) travels to the training process as its bytes,
and `DeviceDecode` decodes every such image of the batch in one `torchvision.io.decode_jpeg` call
on the training device (nvJPEG on a GPU, libjpeg-turbo on a CPU) and resizes it there. Every other
image (PNG, CMYK JPEG, transparency, a JPEG cut short) is decoded in the workers exactly as before,
so a file the workers would skip is still skipped and counted there.

A damaged JPEG can pass the header check. The batched call then fails; each image is decoded on
its own, one that still fails goes through the workers' decoder in the training process, and one
that fails that too is counted under `corrupt_image` in the loader's statistics (checkpointed with
them) and its slot is filled with a repeat of the batch's first good image. The batch keeps its
size, which every rank's global-negative loss needs (they gather equal slices).

On a CPU the squares equal the workers' bit for bit (the same libjpeg-turbo call and resize,
tests/test_device_decode.py). nvJPEG's pixels may differ from libjpeg-turbo's by small amounts
(its IDCT and chroma upsampling are its own).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from PIL import UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_jpeg

from .. import dist
from .device_augment import load_transform
from .fields import member
from .image import ImageField, ImageTooLarge, _open, decode_for_transform, plain_jpeg

END_OF_IMAGE = b"\xff\xd9"


@dataclass
class EncodedImages:
    """A batch's images between the workers and the training process.

    data: uint8 `[total bytes]`, the JPEGs to decode on the device, end to end; image i is
    `data[offsets[i]:offsets[i + 1]]`, an empty span where the workers decoded it already.
    decoded: uint8 `[k, 3, L, L]`, the images the workers decoded, in batch order.
    keys: the samples' keys (named when one cannot be decoded)."""

    data: torch.Tensor
    offsets: list[int]
    decoded: torch.Tensor
    keys: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def pin_memory(self) -> EncodedImages:  # the DataLoader's pin_memory calls it
        return EncodedImages(self.data.pin_memory(), self.offsets, self.decoded.pin_memory(), self.keys)


class EncodedJpegField:
    """Image member -> `image`: the bytes of a plain JPEG, or the workers' uint8 `[3, L, L]` square
    of any other image (`load_transform(load_size)`); collated into one `EncodedImages`.
    Unreadable headers and images the workers cannot decode -> SkipSample, as ImageField."""

    extensions = ImageField.extensions
    collated_keys = ("image", "image_key")

    def __init__(self, load_size: int):
        self.load_size = load_size
        self.in_workers = ImageField(load_transform(load_size))

    def decode(self, sample: dict) -> dict:
        data = member(sample, self.extensions, "image")
        try:
            img = _open(data, None)
        except (ImageTooLarge, UnidentifiedImageError, OSError, ValueError):
            img = None  # the workers' decoder below skips it, under its reason
        if img is not None and plain_jpeg(img) and data.endswith(END_OF_IMAGE):
            return {"image": data, "image_key": sample["__key__"]}
        return {**self.in_workers.decode(sample), "image_key": sample["__key__"]}

    def collate(self, items: list[dict]) -> dict:
        coded = [it["image"] if isinstance(it["image"], bytes) else b"" for it in items]
        offsets = [0]
        for c in coded:
            offsets.append(offsets[-1] + len(c))
        squares = [it["image"] for it in items if not isinstance(it["image"], bytes)]
        data = torch.frombuffer(bytearray(b"".join(coded)), dtype=torch.uint8) if offsets[-1] else torch.empty(0, dtype=torch.uint8)
        decoded = (torch.stack(squares) if squares
                   else torch.empty(0, 3, self.load_size, self.load_size, dtype=torch.uint8))
        return {"image": EncodedImages(data, offsets, decoded, [it["image_key"] for it in items])}


class DeviceDecode:
    """`EncodedImages` -> uint8 `[B, 3, L, L]` on `device`: the squares the workers would have made.

    count(reason, n): where an image that cannot be decoded is counted (ShardLoader.count_skipped)."""

    def __init__(self, load_size: int, device, count: Callable[[str, int], None] | None = None):
        self.square = load_transform(load_size)
        self.load_size = load_size
        self.device = torch.device(device)
        self.count = count or (lambda reason, n: None)
        self.told = False
        self.lines_left = 5
        self.named: set[str] = set()

    def __call__(self, images: EncodedImages) -> torch.Tensor:
        spans = list(zip(images.offsets[:-1], images.offsets[1:]))
        coded = [i for i, (a, b) in enumerate(spans) if b > a]
        self._tell_once(len(coded), len(spans))
        squares: list[torch.Tensor | None] = [None] * len(spans)
        for i, s in zip(coded, self._squares([images.data[spans[i][0]:spans[i][1]] for i in coded])):
            squares[i] = s
        in_workers = iter(images.decoded.to(self.device, non_blocking=True))
        for i, (a, b) in enumerate(spans):
            if a == b:
                squares[i] = next(in_workers)
        bad = [i for i, s in enumerate(squares) if s is None]
        if bad:
            self.count("corrupt_image", len(bad))
            good = next((s for s in squares if s is not None), None)
            fill = good if good is not None else torch.zeros(3, self.load_size, self.load_size, dtype=torch.uint8,
                                                            device=self.device)
            for i in bad:
                squares[i] = fill
            self._tell_skipped([images.keys[i] for i in bad])
        return torch.stack(squares)

    def _squares(self, encoded: list[torch.Tensor]) -> list[torch.Tensor | None]:
        if not encoded:
            return []
        try:
            return [self.square(p) for p in decode_jpeg(encoded, mode=ImageReadMode.RGB, device=self.device)]
        except RuntimeError:  # one damaged file fails the whole call: find it
            return [self._one(e) for e in encoded]

    def _one(self, data: torch.Tensor) -> torch.Tensor | None:
        try:
            return self.square(decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device))
        except RuntimeError:
            pass
        try:  # what the workers would have made of it (Pillow reads some files libjpeg-turbo refuses)
            return self.square(decode_for_transform(bytes(data.numpy()))).to(self.device)
        except (UnidentifiedImageError, OSError, ValueError, RuntimeError):
            return None

    def _tell_skipped(self, keys: list[str]) -> None:
        """A line for each of the first few damaged files, once (every epoch meets them again); the
        count (metrics' data/corrupt_image) has them all."""
        keys = [k for k in keys if k not in self.named]
        self.named.update(keys)
        if keys and self.lines_left > 0:
            self.lines_left -= 1
            more = "" if self.lines_left else "; further ones are only counted (data/corrupt_image)"
            print(f"augment.decode=device: skipped {', '.join(keys)} (corrupt_image: no decoder reads it); its place "
                  f"in the batch repeats another image{more}", flush=True)

    def _tell_once(self, coded: int, total: int) -> None:
        if not self.told and coded < total and dist.is_main_process():
            print(f"augment.decode=device: {total - coded} of the first batch's {total} images are not plain JPEGs "
                  f"(8-bit RGB or grey, complete); those are decoded in the data workers", flush=True)
        self.told = True
