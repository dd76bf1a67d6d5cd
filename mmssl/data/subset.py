"""A class-balanced labelled share of a split, written as its own shard folder so that a result can
be reproduced and the share reused: what fine-tuning with 1% or 10% of the labels and the
semi-supervised recipes train on.
"""
from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path


def balanced_keys(keys: list[str], labels: list[int], fraction: float, seed: int) -> list[str]:
    """The same number of keys from every class (`fraction` of all keys over the classes, at least
    one, at most what a class has), drawn with `seed`; sorted."""
    by_class: dict[int, list[str]] = defaultdict(list)
    for k, y in zip(keys, labels):
        by_class[y].append(k)
    per_class = max(1, round(fraction * len(keys) / len(by_class)))
    rng = random.Random(seed)
    chosen = []
    for y in sorted(by_class):
        members = sorted(by_class[y])
        chosen += rng.sample(members, min(per_class, len(members)))
    return sorted(chosen)


def split_labels(data: str, split: str) -> tuple[list[str], list[int]]:
    """Every key of `split` and its label, read from the `cls` members alone."""
    from .loader import build_loader
    from .fields import LabelField

    loader = build_loader(data, [LabelField()], 512, split=split, shuffle=False, drop_last=False, num_workers=0,
                          rank=0, world_size=1)
    keys, labels = [], []
    for batch in loader:
        keys += batch["key"]
        labels += batch["label"].tolist()
    return keys, labels


def write_subset(data: str, split: str, keys: set[str], out: Path, labels: list[str]) -> None:
    """Copy the samples of `keys` (every member, bytes unchanged) into `out`, a make_shards folder
    with one train split."""
    from .reader import read_segment
    from .shards import Segment, resolve_source
    from .writer import Journal, ShardWriter, write_manifest

    out.mkdir(parents=True, exist_ok=True)
    journal = Journal(out, resume=False)
    writer = ShardWriter(out, "train", journal)
    for url in resolve_source(data, split).urls:
        for sample in read_segment(Segment(url, 0, 1 << 62), None, lambda *a: None):
            if sample["__key__"] in keys:
                writer.write(sample["__key__"], {k: v for k, v in sample.items() if not k.startswith("__")}, {})
    writer.flush()
    journal.close()
    write_manifest(out, journal, labels, f"{data}:{split}", {"labelled_subset_of": data})


class LabelledSubset:
    """`fraction` of `data:split`'s labels, class-balanced, drawn with `seed`.

    `source`/`split` name what to load: the split itself where the share is all of it, else
    `folder/subset` (split train), with the chosen keys in `folder/labelled_keys.txt`. `write()` makes
    them (on one process; a resumed run whose subset is already there keeps it).
    """

    def __init__(self, data: str, split: str, fraction: float, seed: int, folder: Path):
        keys, labels = split_labels(data, split)
        self.data, self.from_split, self.folder = data, split, Path(folder)
        self.classes = max(labels) + 1
        self.total = len(keys)
        self.keys = keys if fraction >= 1 else balanced_keys(keys, labels, fraction, seed)
        self.whole = len(self.keys) == len(keys)
        self.source = data if self.whole else str(self.folder / "subset")
        self.split = split if self.whole else "train"

    def write(self, resume: bool = False) -> None:
        from .shards import resolve_source

        subset = self.folder / "subset"
        if self.whole or (resume and (subset / "manifest.json").exists()):
            return
        write_subset(self.data, self.from_split, set(self.keys), subset, resolve_source(self.data, self.from_split).labels)
        (self.folder / "labelled_keys.txt").write_text("".join(k + "\n" for k in self.keys))
