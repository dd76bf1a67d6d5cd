"""Fields turn the raw members of one shard sample into batch entries.

A field is a small picklable object with:
- `extensions`: the tar member suffixes it reads (the reader keeps no other bytes);
- `decode(sample) -> dict`: the per-sample outputs, raising `SkipSample(reason)` on bad input;
- optionally `collate(values) -> dict` for a whole batch (tokenisation is much faster per batch).

The pipeline builds only the fields the objective asked for, so it never decodes video to train on
images. Each reason a field raises becomes a counter in the loader statistics.
"""
from __future__ import annotations

import torch


class SkipSample(Exception):
    """This sample cannot be used; `reason` is the counter it is reported under."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def member(sample: dict, extensions: tuple[str, ...], what: str) -> bytes:
    """The bytes of the first member with one of `extensions`, or SkipSample('missing_<what>')."""
    for ext in extensions:
        data = sample.get(ext)
        if data is not None:
            return data
    raise SkipSample(f"missing_{what}", f"{sample.get('__key__')} has no {'/'.join(extensions)} member")


class LabelField:
    """`cls` member (ASCII integer) -> `label` (int64 [B]).

    optional: a sample without a `cls` member gets label -1 instead of being skipped (an unlabelled
    stream that still reports pseudo-label accuracy where labels exist). A malformed label is
    skipped either way."""

    extensions = ("cls",)

    def __init__(self, optional: bool = False):
        self.optional = optional

    def decode(self, sample: dict) -> dict:
        if self.optional and sample.get("cls") is None:
            return {"label": -1}
        raw = member(sample, self.extensions, "label")
        try:
            return {"label": int(raw.decode("ascii").strip())}
        except (UnicodeDecodeError, ValueError):
            raise SkipSample("bad_label", f"{sample['__key__']}: {raw[:20]!r}") from None


class ImageIdField:
    """`json` member's `image_id` -> `image_id` (str): which image a caption belongs to when a table
    gave one image several captions (make_shards writes it). Without one, the sample's own key."""

    extensions = ("json",)

    def decode(self, sample: dict) -> dict:
        import json

        try:
            meta = json.loads(sample.get("json") or b"{}")
        except (ValueError, UnicodeDecodeError):
            meta = {}
        image_id = meta.get("image_id") if isinstance(meta, dict) else None
        return {"image_id": str(image_id) if image_id is not None else sample["__key__"]}


def randint(high: int) -> int:
    """Uniform integer in [0, high) from torch's generator, which the stream seeds per sample.

    Fields draw all their randomness from torch, so that seeding one generator per sample makes
    augmentations repeat exactly after a resume.
    """
    return int(torch.randint(high, ())) if high > 1 else 0


def collate(values: list) -> object:
    """Stack tensors and numbers, stack list-of-tensor entries position-wise, keep anything else as a list."""
    first = values[0]
    if isinstance(first, torch.Tensor):
        return torch.stack(values)
    if isinstance(first, bool):
        return torch.tensor(values, dtype=torch.bool)
    if isinstance(first, int):
        return torch.tensor(values, dtype=torch.long)
    if isinstance(first, float):
        return torch.tensor(values, dtype=torch.float32)
    if isinstance(first, list) and first and isinstance(first[0], torch.Tensor):
        return [torch.stack([v[i] for v in values]) for i in range(len(first))]
    return list(values)
