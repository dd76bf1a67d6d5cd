"""Where samples come from: shard URL lists, manifests, per-shard counts, and the epoch plan.

A *source* is what a user names in a config (`data.train=shards/default`):
- a directory written by `tools/make_shards.py`: its `manifest.json` gives the shards of a split
  and their sample counts;
- a directory of tars without a manifest (img2dataset and video2dataset output): its `.tar` files,
  counted from `sizes.json`, img2dataset's `*_stats.json` or a scan of the tar headers;
- a brace pattern (`shards/x/train-{000000..000009}.tar`), `::`-joined patterns, or a list of paths;
- `pipe:` commands and http(s) URLs, opened with `webdataset.gopen`.

Counts come from the manifest, from a `sizes.json` beside the shards (as open_clip reads it), or,
for local tars, from a scan of the tar headers. Where shard names carry a split word
(`train-000000.tar`, `val_0001.tar`), a split is applied by name; a folder or pattern whose names
carry none is one split, the one the user named. Streams whose counts cannot be known (pipes, http
without sizes.json) need `resampled=True` and a fixed number of batches per epoch.

The epoch plan (`plan_epoch`) is what makes distributed streaming exact. The shards of an epoch are
put in a seeded order and read as one long sequence of samples. That sequence is cut into
`world_size` contiguous rank ranges of near-equal length, and each rank range into one piece per
data-loader worker, whose length is a whole number of batches. So every rank yields the same
number of batches, and each sample lands in exactly one (rank, worker) piece. A worker whose piece
starts inside a shard skips the leading samples of that shard without decoding them.
"""
from __future__ import annotations

import glob
import json
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import braceexpand

from .reader import Segment, count_samples, is_remote, split_member_name  # noqa: F401 - re-exported

MANIFEST = "manifest.json"
SIZES = "sizes.json"


class DataSpecError(ValueError):
    """A dataset spec that cannot be used; the message names the path or option."""


@dataclass
class Source:
    """One stream of shards: URLs, their sample counts (None when unknown) and a mixing weight."""

    urls: list[str]
    counts: list[int] | None = None
    weight: float = 1.0
    name: str = ""
    labels: list[str] = field(default_factory=list)

    @property
    def total(self) -> int | None:
        return None if self.counts is None else sum(self.counts)




# A name from data that looks like `scheme:...` would be a URL or command to webdataset's gopen.
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
# Shard names that say which split they hold: `train-000000.tar`, `val_0003.tar`, ...
SPLIT_WORDS = ("train", "val", "valid", "validation", "test", "dev", "eval")
_SPLIT_NAME = re.compile(r"^(%s)[-_.]" % "|".join(SPLIT_WORDS), re.IGNORECASE)


def data_name(folder: str | os.PathLike, name: str, where: str) -> str:
    """The absolute path of shard `name` listed in `where` (a manifest, sizes.json) inside `folder`.

    A name that leaves the folder or carries a URL scheme is refused: a file that names its
    neighbours must not be able to name a command, a URL or someone else's file.
    """
    if (not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", "..")
            or _SCHEME.match(name) or "\0" in name):
        raise DataSpecError(f"{where} names shard {name!r}, which is not a plain file name inside {folder}")
    return os.path.abspath(os.path.join(folder, name))


def read_manifest(directory: str | os.PathLike) -> dict:
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataSpecError(f"no {MANIFEST} in {directory} (build it with tools/make_shards.py)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exn:
        raise DataSpecError(f"{path} is not valid JSON: {exn}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("splits", {}), dict):
        raise DataSpecError(f"{path} is not an mmssl manifest (no 'splits' mapping)")
    return manifest


def expand_pattern(pattern: str) -> list[str]:
    """`a-{000..002}.tar::b.tar` -> ['a-000.tar', 'a-001.tar', 'a-002.tar', 'b.tar']."""
    urls = []
    for part in pattern.split("::"):
        urls.extend(braceexpand.braceexpand(os.path.expandvars(part)))
    return urls


def split_of_name(url: str) -> str | None:
    """'.../val-000003.tar' -> 'val'; None for names that say no split ('00000.tar')."""
    m = _SPLIT_NAME.match(os.path.basename(url))
    return m.group(1).lower() if m else None


def select_split(urls: list[str], split: str, spec: str) -> list[str]:
    """Apply `split` by shard name: where names carry a split word, keep that split's shards (or
    refuse when there are none); where no name does, the shards are the split the user named."""
    named = {u: split_of_name(u) for u in urls}
    if not any(named.values()):
        return urls
    chosen = [u for u in urls if named[u] == split.lower()]
    if not chosen:
        have = ", ".join(sorted({s for s in named.values() if s}))
        raise DataSpecError(f"{spec} has no '{split}' shards by name (its shards are: {have})")
    return chosen


def _counts_beside(urls: list[str]) -> list[int] | None:
    """Per-shard counts from `sizes.json` (open_clip's) or img2dataset's `NNNNN_stats.json`."""
    folders = {os.path.dirname(u) for u in urls}
    if len(folders) != 1 or is_remote(urls[0]):
        return None
    folder = Path(folders.pop() or ".")
    names = [os.path.basename(u) for u in urls]
    sizes_path = folder / SIZES
    if sizes_path.exists():
        try:
            sizes = json.loads(sizes_path.read_text())
            if isinstance(sizes, dict) and all(isinstance(sizes.get(n), int) for n in names):
                return [int(sizes[n]) for n in names]
        except (json.JSONDecodeError, UnicodeDecodeError):
            pass
    counts = []
    for n in names:
        stats = folder / (n[: -len(".tar")] + "_stats.json") if n.endswith(".tar") else None
        try:
            value = json.loads(stats.read_text()).get("successes") if stats and stats.exists() else None
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            value = None
        if not isinstance(value, int):
            return None
        counts.append(value)
    return counts


def _local_counts(urls: list[str]) -> list[int] | None:
    counts = _counts_beside(urls)
    if counts is None and not any(is_remote(u) for u in urls):
        counts = [count_samples(u) for u in urls]
    return counts


def _manifest_source(spec: str, split: str, weight: float) -> Source:
    manifest = read_manifest(spec)
    splits = manifest.get("splits", {})
    if split not in splits:
        raise DataSpecError(f"{spec} has no '{split}' split (it has: {', '.join(sorted(splits)) or 'none'})")
    shards = splits[split].get("shards") or []
    if not shards:
        raise DataSpecError(f"{spec}: split '{split}' has no shards")
    where = f"{Path(spec) / MANIFEST}"
    try:
        urls = [data_name(spec, s["name"], where) for s in shards]
        counts = [int(s["count"]) for s in shards]
    except (KeyError, TypeError, ValueError) as exn:
        if isinstance(exn, DataSpecError):
            raise
        raise DataSpecError(f"{where}: a shard entry lacks a name or a count ({exn})") from None
    missing = [u for u in urls if not os.path.exists(u)]
    if missing:
        raise DataSpecError(f"{where} lists {os.path.basename(missing[0])}, which is not in {spec}")
    return Source(urls=urls, counts=counts, weight=weight, name=f"{spec}:{split}",
                  labels=list(manifest.get("labels", [])))


def resolve_source(spec, split: str = "train", weight: float = 1.0) -> Source:
    """Turn one user spec (directory, pattern, list of paths, pipe:/http URL) into a `Source`.

    A directory with a `manifest.json` (make_shards) gives the split's shards and counts. A
    directory without one (img2dataset, video2dataset, any folder of tars) gives its `.tar` files,
    filtered by `split` when their names carry split words. Patterns and lists are what the user
    typed, filtered by name the same way.
    """
    if isinstance(spec, (list, tuple)):
        urls = [str(u) for u in spec]
        name = f"{len(urls)} urls"
    else:
        spec = str(spec)
        if not is_remote(spec) and os.path.isdir(spec):
            if (Path(spec) / MANIFEST).exists():
                return _manifest_source(spec, split, weight)
            urls = sorted(os.path.abspath(p) for p in glob.glob(os.path.join(glob.escape(spec), "*.tar")))
            if not urls:
                raise DataSpecError(f"no {MANIFEST} and no .tar shards in {spec} (build it with tools/make_shards.py)")
            urls = select_split(urls, split, spec)
            return Source(urls=urls, counts=_local_counts(urls), weight=weight, name=f"{spec}:{split}")
        if not is_remote(spec) and "{" not in spec and "::" not in spec and not os.path.exists(spec):
            raise DataSpecError(f"data path not found: {spec} (give a make_shards.py folder, a .tar, or a brace pattern)")
        urls = expand_pattern(spec)
        name = spec
    if not urls:
        raise DataSpecError(f"data spec {spec!r} names no shards")
    local = [u for u in urls if not is_remote(u)]
    missing = [u for u in local if not os.path.exists(u)]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataSpecError(f"shard not found: {missing[0]}{more}")
    urls = select_split(urls, split, name)
    return Source(urls=urls, counts=_local_counts(urls), weight=weight, name=name)


def resolve_sources(spec, split: str = "train") -> list[Source]:
    """A spec, or a list of `{"spec": ..., "weight": w}` dicts for a weighted mixture."""
    if isinstance(spec, (list, tuple)) and spec and all(isinstance(s, dict) for s in spec):
        sources = []
        for item in spec:
            if "spec" not in item:
                raise DataSpecError(f"mixture entry {item} needs a 'spec' key")
            sources.append(resolve_source(item["spec"], split, float(item.get("weight", 1.0))))
        return sources
    return [resolve_source(spec, split)]


@dataclass
class WorkerPlan:
    """What one logical data worker reads in one epoch, and how many batches it must yield."""

    segments: list[Segment]
    batches: int

    @property
    def samples(self) -> int:
        return sum(s.stop - s.start for s in self.segments)


def epoch_seed(seed: int, epoch: int, *parts: int) -> int:
    """A deterministic 63-bit seed from a base seed, the epoch and any ids (rank, worker, ...)."""
    return random.Random(repr((seed, epoch) + parts)).getrandbits(63)


def sample_seed(*parts: int) -> int:
    """A cheap 63-bit seed from small non-negative ints (splitmix64 mixing), used once per sample."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (p + 0x9E3779B97F4A7C15 + (h << 6) + (h >> 2))) & 0xFFFFFFFFFFFFFFFF
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h >> 1


def shard_order(n_shards: int, seed: int, epoch: int, shuffle: bool) -> list[int]:
    order = list(range(n_shards))
    if shuffle:
        random.Random(epoch_seed(seed, epoch)).shuffle(order)
    return order


def _even_split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _segments(urls, counts, order, start, stop) -> list[Segment]:
    """Cut global sample positions [start, stop) of the ordered shard sequence into shard segments."""
    out, offset = [], 0
    for idx in order:
        lo, hi = offset, offset + counts[idx]
        offset = hi
        a, b = max(lo, start), min(hi, stop)
        if a < b:
            out.append(Segment(urls[idx], a - lo, b - lo))
        if offset >= stop:
            break
    return out


def plan_epoch(
    urls: list[str],
    counts: list[int],
    *,
    epoch: int,
    seed: int,
    rank: int,
    world_size: int,
    num_workers: int,
    batch_size: int,
    drop_last: bool,
    shuffle: bool,
) -> list[WorkerPlan]:
    """Split one epoch of a finite source into `num_workers` plans for this rank.

    With `drop_last`, every rank yields `floor(floor(N / world) / batch)` full batches, and the few
    samples beyond that are spares: a worker uses them in place of corrupt samples and drops the
    rest (counted). Without it, every sample is read exactly once over all ranks and workers, the
    last batch of a rank may be short, and rank batch counts differ by at most one.
    """
    total = sum(counts)
    rank_sizes = _even_split(total, world_size)
    rank_start = sum(rank_sizes[:rank])
    n_rank = rank_sizes[rank]
    if drop_last:
        n_batches = (total // world_size) // batch_size
        if n_batches == 0:
            raise DataSpecError(
                f"{total} samples cannot fill one batch of {batch_size} on each of {world_size} ranks; "
                "lower batch_size or add data"
            )
    else:
        n_batches = -(-n_rank // batch_size)
    worker_batches = _even_split(n_batches, num_workers)
    # Spare samples (drop_last only) are shared out so each worker has a few replacements.
    spare = _even_split(n_rank - min(n_rank, n_batches * batch_size), num_workers)
    order = shard_order(len(urls), seed, epoch, shuffle)
    plans, cursor = [], rank_start
    rank_stop = rank_start + n_rank
    for w in range(num_workers):
        length = min(worker_batches[w] * batch_size + spare[w], rank_stop - cursor)
        plans.append(WorkerPlan(_segments(urls, counts, order, cursor, cursor + length), worker_batches[w]))
        cursor += length
    return plans
