"""`ShardStream`: the IterableDataset behind every mmssl loader.

Each DataLoader worker plays one *logical worker* of the epoch plan (see `shards.plan_epoch`):
it reads its segments, shuffles through a seeded buffer, decodes only the requested fields, skips
and counts bad samples, and yields whole batches together with its position.

Exact resume: a worker's position is the number of raw samples that have left its shuffle buffer
(decoded or skipped). To restart at position p, the worker re-reads its plan with the same seeds
and discards the first p raw samples without decoding them, so the buffer holds exactly what it
held before. Augmentations draw from a generator seeded by (seed, epoch, rank, worker, position),
so they repeat too.
"""
from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch.utils.data import IterableDataset, get_worker_info

from .fields import SkipSample, collate
from .reader import read_segment
from .shards import DataSpecError, Segment, Source, WorkerPlan, epoch_seed, plan_epoch, sample_seed


@dataclass
class WorkerStart:
    """Where a logical worker resumes: its epoch and its position inside it."""

    epoch: int = 0
    emitted: int = 0
    batches: int = 0
    stats: dict = field(default_factory=dict)


@dataclass
class BatchMeta:
    """Sent with every batch, or alone (batch=None) in an empty slot; `done` on a worker's last item of its epoch."""

    epoch: int
    worker: int
    emitted: int
    batches: int
    stats: dict
    done: bool = False


class ShardStream(IterableDataset):
    """Batches from tar shards, split exactly over ranks and workers.

    Args:
        sources: resolved `Source`s. One finite source reads each sample once per epoch; several
            sources, or `resampled=True`, draw shards with replacement (mixing by weight).
        fields: objects with `extensions`, `decode(sample)` and optionally `collate(values)`.
        batch_size: samples per batch on this rank.
        epoch_batches: batches per rank per epoch when resampled (required then).
    """

    def __init__(
        self,
        sources: list[Source],
        fields: list,
        batch_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        shuffle: bool = True,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        drop_last: bool = True,
        resampled: bool = False,
        epoch_batches: int | None = None,
    ):
        if batch_size < 1:
            raise DataSpecError(f"batch_size must be >= 1, got {batch_size}")
        self.sources = sources
        self.fields = fields
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world_size
        self.logical_workers = max(1, num_workers)
        self.shuffle, self.shuffle_buffer = shuffle, shuffle_buffer if shuffle else 0
        self.seed, self.drop_last = seed, drop_last
        self.resampled = resampled or len(sources) > 1
        self.epoch_batches = epoch_batches
        if self.resampled and not epoch_batches:
            raise DataSpecError("resampled or mixed streams need epoch_batches (batches per rank per epoch)")
        if not self.resampled and sources[0].counts is None:
            raise DataSpecError(
                f"sample counts of {sources[0].name} are unknown (remote shards without sizes.json); "
                "set resampled=true and epoch_batches"
            )
        exts = set()
        for f in fields:
            exts.update(f.extensions)
        self.extensions = exts
        # Set by the loader before its DataLoader is made (workers get a fresh copy): where each
        # logical worker starts, which one DataLoader worker 0 plays, and whether a worker goes on
        # to its next epoch when one ends (`continuous`, training) or stops (one epoch, evaluation).
        self.starts: dict[int, WorkerStart] = {}
        self.rotation = 0
        self.continuous = False

    # ---- planning -------------------------------------------------------------------------
    def plans(self, epoch: int) -> list[WorkerPlan]:
        if self.resampled:
            per_worker = [self.epoch_batches // self.logical_workers + (w < self.epoch_batches % self.logical_workers)
                          for w in range(self.logical_workers)]
            return [WorkerPlan([], b) for b in per_worker]
        src = self.sources[0]
        return plan_epoch(
            src.urls, src.counts, epoch=epoch, seed=self.seed, rank=self.rank, world_size=self.world_size,
            num_workers=self.logical_workers, batch_size=self.batch_size, drop_last=self.drop_last,
            shuffle=self.shuffle,
        )

    def batches_per_epoch(self, epoch: int = 0) -> int:
        return sum(p.batches for p in self.plans(epoch))

    # ---- raw sample order -----------------------------------------------------------------
    def _samples(self, plan: WorkerPlan, rng: random.Random, on_error, stats: Counter) -> Iterator[dict]:
        """Raw samples in this worker's shuffled order.

        With drop_last, a worker that corrupt samples left short of full batches reads its piece
        again (a new shuffled pass, counted as `refill_pass`); the iteration stops as soon as its
        batches are full, so a second pass starts only when it is needed. A pass that yields no
        usable sample at all ends the stream (the caller reports why).
        """
        if self.resampled:
            yield from self._shuffled(self._resampled_raw(rng, on_error), rng)
            return
        while True:
            got, usable_before = 0, stats["samples"]
            for sample in self._shuffled(self._one_pass(plan, on_error), rng):
                got += 1
                yield sample
            if not self.drop_last or got == 0 or stats["samples"] == usable_before:
                return
            on_error("refill_pass", "worker piece reread to fill its batches")

    def _one_pass(self, plan: WorkerPlan, on_error) -> Iterator[dict]:
        for seg in plan.segments:
            yield from read_segment(seg, self.extensions, on_error)

    def _resampled_raw(self, rng: random.Random, on_error) -> Iterator[dict]:
        weights = [s.weight for s in self.sources]
        streams = [self._shard_cycle(s, rng, on_error) for s in self.sources]
        while True:
            yield next(rng.choices(streams, weights)[0])

    def _shard_cycle(self, src: Source, rng: random.Random, on_error) -> Iterator[dict]:
        empty_draws = 0
        while True:
            url = rng.choice(src.urls)
            got = 0
            for sample in read_segment(Segment(url, 0, 1 << 62), self.extensions, on_error):
                got += 1
                yield sample
            empty_draws = 0 if got else empty_draws + 1
            if empty_draws > 10 * len(src.urls):
                raise DataSpecError(f"{src.name}: no readable samples in any shard")

    def _shuffled(self, raw: Iterator[dict], rng: random.Random) -> Iterator[dict]:
        if self.shuffle_buffer <= 1:
            yield from raw
            return
        buf: list[dict] = []
        for sample in raw:
            if len(buf) < self.shuffle_buffer:
                buf.append(sample)
                continue
            i = rng.randrange(len(buf))
            buf[i], sample = sample, buf[i]
            yield sample
        rng.shuffle(buf)
        yield from buf

    # ---- decoding -------------------------------------------------------------------------
    def _decode(self, sample: dict, gen_seed: int, stats: Counter) -> dict | None:
        out = {"key": sample["__key__"]}
        # Fields draw their randomness from torch's global generator (torchvision v2 does too).
        # Save and restore it so the trainer's streams (dropout, masking) are untouched when this
        # runs in the main process (num_workers=0). It is seeded directly: `torch.manual_seed`
        # goes through a dynamo wrapper that costs about a millisecond per call.
        gen = torch.default_generator
        torch_state = gen.get_state()
        gen.manual_seed(gen_seed)
        try:
            for f in self.fields:
                out.update(f.decode(sample))
        except SkipSample as skip:
            stats[skip.reason] += 1
            return None
        finally:
            gen.set_state(torch_state)
        return out

    def _collate(self, items: list[dict]) -> dict:
        batch = {}
        custom = set()
        for f in self.fields:
            fn = getattr(f, "collate", None)
            if fn is not None:
                batch.update(fn(items))
                custom.update(getattr(f, "collated_keys", ()))
        for k in items[0]:
            if k not in custom and k not in batch:
                batch[k] = collate([it[k] for it in items])
        return batch

    # ---- iteration ------------------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple[dict | None, BatchMeta]]:
        info = get_worker_info()
        dl_worker = info.id if info is not None else 0
        n_dl = info.num_workers if info is not None else 1
        if n_dl != self.logical_workers:
            raise RuntimeError(f"stream planned for {self.logical_workers} workers but runs with {n_dl}")
        worker = (dl_worker + self.rotation) % self.logical_workers
        start = self.starts.get(worker, WorkerStart())
        while True:
            yield from self.iter_worker(start.epoch, worker, start)
            if not self.continuous:
                return
            start = WorkerStart(start.epoch + 1)

    def iter_worker(self, epoch: int, worker: int, start: WorkerStart) -> Iterator[tuple[dict | None, BatchMeta]]:
        plans = self.plans(epoch)
        plan, slots = plans[worker], max(p.batches for p in plans)
        stats = Counter(start.stats)
        rng = random.Random(epoch_seed(self.seed, epoch, self.rank, worker))

        def on_error(reason: str, detail: str) -> None:
            stats[reason] += 1

        emitted, batches = 0, start.batches
        items: list[dict] = []
        stream = self._samples(plan, rng, on_error, stats)
        finished_early = False
        if batches >= plan.batches:
            stream, emitted, finished_early = iter(()), start.emitted, True
        # The epoch's last item (batch or empty slot) carries `done`, rather than a separate item
        # after it: an item of its own would hold one of the loader's prefetch places at every
        # epoch boundary, and the workers would start their next epoch a batch late.
        tail: list[tuple[dict | None, int]] = []  # the last items, held until the epoch's counts are final
        for sample in stream:
            emitted += 1
            if emitted <= start.emitted:
                continue  # replaying up to the resume position: no decoding
            item = self._decode(sample, sample_seed(self.seed, epoch, self.rank, worker, emitted), stats)
            if item is None:
                continue
            stats["samples"] += 1
            items.append(item)
            if len(items) == self.batch_size:
                batches += 1
                batch, items = self._collate(items), []
                if batches >= plan.batches:
                    finished_early = True
                    tail.append((batch, batches))
                    break
                yield batch, BatchMeta(epoch, worker, emitted, batches, dict(stats))
        if items and batches < plan.batches and not self.drop_last:
            batches += 1
            tail.append((self._collate(items), batches))
            items = []
        if batches < plan.batches and self.drop_last:
            skipped = ", ".join(f"{k} {v}" for k, v in sorted(stats.items()) if k != "samples")
            raise DataSpecError(
                f"{self.sources[0].name}: too few usable samples to fill {plan.batches} batches of {self.batch_size} "
                f"(rank {self.rank}, worker {worker}: {stats['samples']} usable; skipped: {skipped or 'none'})"
            )
        # Nothing leaves silently: decoded samples that did not fill a batch, and samples of the
        # piece never read (drop_last spares), are counted. Samples the manifest promised but the
        # shard did not hold (a truncated tar) are counted as unread.
        if items:
            stats["dropped_tail"] += len(items)
        # Every worker fills the epoch's `slots` with empty items after its batches, so round-robin
        # reading keeps all of them in the same epoch (a worker with fewer batches would otherwise
        # run ahead, and its samples come round more often).
        while batches < slots:
            batches += 1
            tail.append((None, batches))
        before_end = dict(stats)  # what a resume from an item before the last starts from
        if not self.resampled and plan.samples > emitted:
            stats["dropped_tail" if finished_early else "unread_samples"] += plan.samples - emitted
        if not tail:  # resumed after its last slot (a checkpoint from before `done` rode on it)
            tail.append((None, batches))
        for i, (batch, n) in enumerate(tail):
            last = i == len(tail) - 1
            yield batch, BatchMeta(epoch, worker, emitted, n, dict(stats) if last else dict(before_end), done=last)
