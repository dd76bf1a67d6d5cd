"""`ShardLoader`: a DataLoader over a `ShardStream` that knows its exact position.

It is deliberately *not* passed through `accelerator.prepare`: that would either read everything on
rank 0 and scatter it, or shard the stream a second time. Each rank builds its own loader with its
own rank and world size, and the epoch plan gives every rank the same number of batches.

Worker order. PyTorch hands out a worker's batches round-robin, starting from worker 0. After a
resume at batch k, DataLoader worker i therefore plays logical worker (i + k) mod W, so the batch
order continues exactly where the interrupted run left it.
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
    """Iterate it for one epoch of batches; `state_dict()` is the stream position to checkpoint."""

    def __init__(self, stream: ShardStream, num_workers: int = 0, prefetch_factor: int = 2, pin_memory: bool = False):
        self.stream = stream
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor
        self.pin_memory = pin_memory
        self.epoch = 0
        self._items = 0  # batches and end-of-worker markers received this epoch
        self._workers: dict[int, WorkerStart] = {}
        self._stats_before = Counter()  # from finished epochs

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return self.stream.batches_per_epoch(self.epoch)

    def __iter__(self) -> Iterator[dict]:
        self.stream.epoch = self.epoch
        self.stream.rotation = self._items % self.stream.logical_workers
        self.stream.starts = dict(self._workers)
        kwargs = {}
        if self.num_workers > 0:
            kwargs = dict(prefetch_factor=self.prefetch_factor, worker_init_fn=_worker_init)
        loader = DataLoader(self.stream, batch_size=None, num_workers=self.num_workers, pin_memory=self.pin_memory, **kwargs)
        for batch, meta in loader:
            self._items += 1
            self._workers[meta.worker] = WorkerStart(meta.emitted, meta.batches, meta.stats)
            if batch is not None:
                yield batch
        self._stats_before += self._epoch_stats()
        self.epoch += 1
        self._items = 0
        self._workers = {}

    def forever(self) -> Iterator[dict]:
        """Batches across epochs, without end (training is counted in steps)."""
        while True:
            yield from self

    def _epoch_stats(self) -> Counter:
        total = Counter()
        for w in self._workers.values():
            total.update(w.stats)
        return total

    @property
    def stats(self) -> dict:
        """Samples delivered and skipped by reason, over every epoch so far (this rank)."""
        return dict(self._stats_before + self._epoch_stats())

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "items": self._items,
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
        self.epoch = int(state["epoch"])
        self._items = int(state["items"])
        self._workers = {int(w): WorkerStart(**s) for w, s in state["workers"].items()}
        self._stats_before = Counter(state["stats_before"])


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
        while True:
            yield {name: next(stream) for name, stream in streams.items()}

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
