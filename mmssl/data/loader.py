"""`ShardLoader`: a DataLoader over a `ShardStream` that knows its exact position.

It is deliberately *not* passed through `accelerator.prepare`: that would either read everything on
rank 0 and scatter it, or shard the stream a second time. Each rank builds its own loader with its
own rank and world size, and the epoch plan gives every rank the same number of batches.

Training reads `forever()`: one DataLoader whose workers live for the whole run, each going on to
its next epoch as soon as it finishes one, so no epoch boundary waits for workers to be killed,
respawned and refilled. Each logical worker therefore has its own epoch and position.

Worker order. PyTorch hands out a worker's items round-robin, starting from worker 0, and every
logical worker emits its batches then one end-of-epoch marker. The loader remembers which logical
worker's item comes next; a resumed loader makes DataLoader worker i play logical worker
(i + next) mod W, so the batch order continues exactly where the interrupted run left it.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader

from .. import dist
from .shards import resolve_sources
from .stream import ShardStream, WorkerStart


def _worker_init(_):
    # One intra-op thread per worker: the workers already use every core between them.
    torch.set_num_threads(1)


class ShardLoader:
    """Iterate it for one epoch of batches (evaluation), or read `forever()` (training);
    `state_dict()` is the exact stream position to checkpoint."""

    def __init__(self, stream: ShardStream, num_workers: int = 0, prefetch_factor: int = 2, pin_memory: bool = False):
        self.stream = stream
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor
        self.pin_memory = pin_memory
        self._workers = {w: WorkerStart() for w in range(stream.logical_workers)}  # where each logical worker is
        self._next = 0  # the logical worker whose item comes next
        self._stats_before = Counter()  # from epochs the workers finished
        self._delivered_epoch: int | None = None

    @property
    def epoch(self) -> int:
        """The epoch of the batch delivered last (the one a run is counted in); before the first, the
        oldest epoch a worker is in. Not the workers' minimum throughout: a worker's last batch of an
        epoch moves it to the next, while the epoch's last slot may still be another worker's."""
        return self._delivered_epoch if self._delivered_epoch is not None else self._oldest_epoch()

    def _oldest_epoch(self) -> int:
        return min(w.epoch for w in self._workers.values())

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return self.stream.batches_per_epoch(self.epoch)

    def __iter__(self) -> Iterator[dict]:
        """The batches of one epoch: each worker reads on to the end of its current epoch."""
        return self._read(continuous=False)

    def forever(self) -> Iterator[dict]:
        """Batches across epochs, without end (training is counted in steps), from workers that
        live as long as the iterator."""
        return self._read(continuous=True)

    def _read(self, continuous: bool) -> Iterator[dict]:
        self.stream.starts = dict(self._workers)
        self.stream.rotation = self._next
        self.stream.continuous = continuous
        kwargs = {}
        if self.num_workers > 0:
            kwargs = dict(prefetch_factor=self.prefetch_factor, worker_init_fn=_worker_init)
        loader = DataLoader(self.stream, batch_size=None, num_workers=self.num_workers, pin_memory=self.pin_memory, **kwargs)
        for batch, meta in loader:
            self._next = (meta.worker + 1) % self.stream.logical_workers
            if meta.done:  # this worker's epoch is over: its counts join the finished ones
                self._stats_before.update(meta.stats)
                self._workers[meta.worker] = WorkerStart(meta.epoch + 1)
            else:
                self._workers[meta.worker] = WorkerStart(meta.epoch, meta.emitted, meta.batches, meta.stats)
            if batch is not None:  # not an empty slot
                self._delivered_epoch = meta.epoch
                yield batch

    def _epoch_stats(self) -> Counter:
        total = Counter()
        for w in self._workers.values():
            total.update(w.stats)
        return total

    @property
    def stats(self) -> dict:
        """Samples delivered and skipped by reason, over every epoch so far (this rank)."""
        return dict(self._stats_before + self._epoch_stats())

    def count_skipped(self, reason: str, n: int = 1) -> None:
        """Count samples skipped after the workers delivered them (a JPEG only the training device
        found damaged, mmssl.data.device_decode); kept in the statistics and checkpoints."""
        self._stats_before[reason] += n

    def state_dict(self) -> dict:
        return {
            "epoch": self._oldest_epoch(),
            "next_worker": self._next,
            "workers": {w: vars(s) for w, s in self._workers.items()},
            "stats_before": dict(self._stats_before),
            "logical_workers": self.stream.logical_workers,
            "world_size": self.stream.world_size,
            "rank": self.stream.rank,
        }

    def load_state_dict(self, state: dict) -> None:
        for key in ("logical_workers", "world_size"):
            mine = getattr(self.stream, key)
            if state[key] != mine:
                raise ValueError(f"cannot resume the data stream: saved with {key}={state[key]}, now {mine}")
        epoch = int(state["epoch"])
        # Checkpoints written before workers kept their own epoch hold one epoch for all of them
        # and the count of items read in it.
        self._workers = {w: WorkerStart(epoch) for w in range(self.stream.logical_workers)}
        for w, s in state["workers"].items():
            self._workers[int(w)] = WorkerStart(**{"epoch": epoch, **s})
        self._next = int(state.get("next_worker", state.get("items", 0))) % self.stream.logical_workers
        self._stats_before = Counter(state["stats_before"])
        self._delivered_epoch = None


class ZippedLoaders:
    """Several named loaders read in step: each batch is `{name: that loader's next batch}`.

    The ratio between the streams is fixed by their batch sizes (FixMatch: B labelled images and
    mu * B unlabelled ones per step). Each stream runs its own epochs and keeps its own exact
    position, so `state_dict()` resumes every one of them where it stopped. It offers what
    `mmssl.train.fit` and the checkpoints use of a `ShardLoader`.
    """

    def __init__(self, loaders: dict[str, ShardLoader]):
        if not loaders:
            raise ValueError("ZippedLoaders needs at least one named loader")
        self.loaders = dict(loaders)

    def forever(self) -> Iterator[dict]:
        streams = {name: loader.forever() for name, loader in self.loaders.items()}
        try:
            while True:
                yield {name: next(stream) for name, stream in streams.items()}
        finally:
            for stream in streams.values():
                stream.close()

    @property
    def epoch(self) -> int:
        """The first stream's epoch (the one a run is counted in)."""
        return next(iter(self.loaders.values())).epoch

    @property
    def stats(self) -> dict:
        return {f"{name}/{k}": v for name, loader in self.loaders.items() for k, v in loader.stats.items()}

    def state_dict(self) -> dict:
        return {name: loader.state_dict() for name, loader in self.loaders.items()}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != set(self.loaders):
            raise ValueError(f"cannot resume the data streams: saved {sorted(state)}, now {sorted(self.loaders)}")
        for name, loader in self.loaders.items():
            loader.load_state_dict(state[name])


def build_loader(
    spec,
    fields: list,
    batch_size: int,
    *,
    split: str = "train",
    num_workers: int = 0,
    seed: int = 0,
    shuffle: bool = True,
    shuffle_buffer: int = 1000,
    drop_last: bool = True,
    resampled: bool = False,
    epoch_batches: int | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    prefetch_factor: int = 2,
    pin_memory: bool = False,
) -> ShardLoader:
    """A loader for `spec` (directory, pattern, list, or weighted mixture) decoding only `fields`.

    Rank and world size default to the current process group (or RANK/WORLD_SIZE).
    """
    stream = ShardStream(
        resolve_sources(spec, split),
        fields,
        batch_size,
        rank=dist.rank() if rank is None else rank,
        world_size=dist.world_size() if world_size is None else world_size,
        num_workers=num_workers,
        shuffle=shuffle,
        shuffle_buffer=shuffle_buffer,
        seed=seed,
        drop_last=drop_last,
        resampled=resampled,
        epoch_batches=epoch_batches,
    )
    return ShardLoader(stream, num_workers=num_workers, prefetch_factor=prefetch_factor, pin_memory=pin_memory)


def training_loader(cfg: dict, fields: list, spec=None, split: str = "train", batch_size: int | None = None,
                    seed_offset: int = 0, num_workers: int | None = None) -> ShardLoader:
    """The training stream a run's config describes (mmssl.train.TRAIN_DEFAULTS): `data.train`,
    `batch_size`, `num_workers`, `seed`, `data.shuffle_buffer`, `data.prefetch_factor`, and
    `data.pin_memory` where there is a GPU to copy to. A second stream of the same run (a labelled
    subset beside the unlabelled set) names its own `spec`, `split`, batch size and workers, and
    shuffles with `seed + seed_offset`."""
    data = cfg["data"]
    return build_loader(spec or data["train"], fields, batch_size or cfg["batch_size"], split=split,
                        num_workers=cfg["num_workers"] if num_workers is None else num_workers,
                        seed=cfg["seed"] + seed_offset, shuffle_buffer=data["shuffle_buffer"],
                        prefetch_factor=data["prefetch_factor"], pin_memory=data["pin_memory"] and torch.cuda.is_available())
