"""mmssl.data streaming: exact coverage over ranks x workers, equal batch counts, exact resume,
bad samples counted by reason, resampling and weighted mixing, and no unpickling anywhere."""
from __future__ import annotations

import io
import os
import json
import pickle
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import torch

from mmssl.data import DataSpecError, ImageField, LabelField, TextField, build_loader, train_transform


def train_keys(shard_dir: Path) -> list[str]:
    keys = []
    for p in sorted(shard_dir.glob("train-*.tar")):
        for n in tarfile.open(p).getnames():
            k = n.split(".", 1)[0]
            if not keys or keys[-1] != k:
                keys.append(k)
    return keys


def epoch_keys(loader) -> list[list[str]]:
    return [b["key"] for b in loader]


@pytest.mark.parametrize("shuffle", [False, True])
def test_every_sample_exactly_once_over_2_ranks_x_2_workers(image_shards, shuffle):
    expected = train_keys(image_shards)
    seen, batch_counts = [], []
    for rank in range(2):
        loader = build_loader(image_shards, [LabelField()], 3, rank=rank, world_size=2, num_workers=2,
                              shuffle=shuffle, shuffle_buffer=4, drop_last=False, seed=3)
        batches = epoch_keys(loader)
        batch_counts.append(len(batches))
        seen.extend(k for b in batches for k in b)
        assert loader.stats["samples"] == sum(len(b) for b in batches)
    assert sorted(seen) == sorted(expected) and len(seen) == len(set(seen))
    assert max(batch_counts) - min(batch_counts) <= 1


def test_drop_last_gives_every_rank_the_same_full_batches(image_shards):
    expected = set(train_keys(image_shards))
    counts, seen, dropped = [], [], 0
    for rank in range(2):
        loader = build_loader(image_shards, [LabelField()], 4, rank=rank, world_size=2, num_workers=2, seed=1)
        batches = epoch_keys(loader)
        assert all(len(b) == 4 for b in batches)
        counts.append(len(batches))
        seen.extend(k for b in batches for k in b)
        dropped += loader.stats.get("dropped_tail", 0)
    assert counts[0] == counts[1] == (len(expected) // 2) // 4
    assert len(seen) == len(set(seen)) and set(seen) <= expected
    assert len(seen) + dropped == len(expected)  # the rest is counted, not lost silently


def test_epochs_reshuffle_with_the_seed(image_shards):
    loader = build_loader(image_shards, [LabelField()], 4, num_workers=0, seed=5, shuffle_buffer=8)
    e0, e1 = epoch_keys(loader), epoch_keys(loader)
    again = build_loader(image_shards, [LabelField()], 4, num_workers=0, seed=5, shuffle_buffer=8)
    assert e0 != e1 and epoch_keys(again) == e0


@pytest.mark.parametrize("num_workers, stop_after", [(0, 3), (2, 3), (2, 4), (2, 9)])
def test_resume_continues_with_the_same_batches(image_shards, num_workers, stop_after):
    """Stop after `stop_after` batches (mid-epoch or in the next epoch), save, restore in a new loader."""
    def make():
        return build_loader(image_shards, [ImageField(train_transform(16)), LabelField()], 3, num_workers=num_workers,
                            seed=7, shuffle_buffer=6)

    reference = make()
    epoch = len(reference)
    assert stop_after < 2 * epoch
    stream = reference.forever()
    ref = [(b["key"], b["image"]) for b in (next(stream) for _ in range(2 * epoch))]
    stream.close()
    interrupted = make()
    got = []
    stream = interrupted.forever()
    for _ in range(stop_after):
        b = next(stream)
        got.append((b["key"], b["image"]))
    state = json.loads(json.dumps(interrupted.state_dict()))  # it must survive a JSON round trip
    stream.close()
    resumed = make()
    resumed.load_state_dict(state)
    stream = resumed.forever()
    while len(got) < len(ref):
        b = next(stream)
        got.append((b["key"], b["image"]))
    assert [k for k, _ in got] == [k for k, _ in ref]
    for (_, a), (_, b) in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # same augmentations too


class WorkerPid:
    """A field that reports which process decoded the sample."""

    extensions = ("cls",)

    def decode(self, sample: dict) -> dict:
        return {"pid": torch.tensor(os.getpid())}


def test_forever_keeps_its_workers_across_epochs_and_covers_each_epoch_exactly(image_shards):
    loader = build_loader(image_shards, [LabelField(), WorkerPid()], 3, num_workers=2, seed=2, shuffle_buffer=4)
    per_epoch = len(loader)
    one_epoch = set(k for b in loader for k in b["key"])  # the loader is now at epoch 1
    stream = loader.forever()
    batches = [next(stream) for _ in range(3 * per_epoch)]
    stream.close()
    pids = {int(p) for b in batches for p in b["pid"]}
    assert len(pids) == 2 and os.getpid() not in pids  # the same two worker processes for 3 epochs
    # No sample twice in an epoch (workers may run up to one epoch apart, so three epochs' batches
    # hold each sample at most three times), and the counts go on across epochs.
    keys = Counter(k for b in batches for k in b["key"])
    assert set(keys) <= set(train_keys(image_shards)) and max(keys.values()) <= 3 and len(one_epoch) == 3 * per_epoch
    assert loader.epoch == 3 and loader.stats["samples"] == 4 * per_epoch * 3


def test_each_batch_is_counted_in_its_own_epoch(image_shards):
    # Batches of 2 over these shards: in some epochs the two workers' shares differ and an epoch's
    # last slot is an empty one, after the last batch. The worker that sent that batch is already in
    # its next epoch; the batch still belongs to the old one.
    loader = build_loader(image_shards, [LabelField()], 2, num_workers=2, seed=0, shuffle_buffer=4)
    per_epoch = len(loader)
    stream = loader.forever()
    epochs = []
    for _ in range(3 * per_epoch):
        next(stream)
        epochs.append(loader.epoch)
    stream.close()
    assert epochs == [i // per_epoch for i in range(3 * per_epoch)]


def test_resume_refuses_another_world_size(image_shards):
    loader = build_loader(image_shards, [LabelField()], 2, rank=0, world_size=2)
    state = loader.state_dict()
    other = build_loader(image_shards, [LabelField()], 2, rank=0, world_size=1)
    with pytest.raises(ValueError, match="world_size=2, now 1"):
        other.load_state_dict(state)


def write_tar(path: Path, samples: list[dict]) -> None:
    with tarfile.open(path, "w") as tar:
        for sample in samples:
            for ext, data in sample.items():
                if ext == "__key__":
                    continue
                info = tarfile.TarInfo(f"{sample['__key__']}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def damaged_shards(image_shards, tmp_path) -> Path:
    """Two shards of real images: one with a corrupt image, a sample without image, an empty caption;
    one truncated in the middle of a member."""
    good = []
    for p in sorted(image_shards.glob("train-*.tar")):
        with tarfile.open(p) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".png"):
                    good.append(tar.extractfile(m).read())
    a = [{"__key__": f"a{i}", "png": good[i], "txt": f"photo {i}".encode()} for i in range(8)]
    a[2]["png"] = b"\x89PNG\r\n\x1a\n garbage"
    del a[4]["png"]
    a[6]["txt"] = b"   "
    write_tar(tmp_path / "x-000000.tar", a)
    b = [{"__key__": f"b{i}", "png": good[8 + i], "txt": f"photo b{i}".encode()} for i in range(8)]
    write_tar(tmp_path / "x-000001.tar", b)
    data = (tmp_path / "x-000001.tar").read_bytes()
    (tmp_path / "x-000001.tar").write_bytes(data[: len(data) * 5 // 8])
    return tmp_path


def test_bad_samples_are_skipped_and_counted_by_reason(damaged_shards):
    spec = str(damaged_shards / "x-{000000..000001}.tar")
    loader = build_loader(spec, [ImageField(train_transform(16)), TextField()], 2, shuffle=False, drop_last=False)
    keys = [k for b in loader for k in b["key"]]
    stats = loader.stats
    assert stats["corrupt_image"] == 1 and stats["empty_caption"] == 1 and stats["truncated_tar"] == 1
    # a4 has no image, and so has the partial sample at the cut when the cut falls before its image.
    assert stats["missing_image"] in (1, 2)
    assert {"a2", "a4", "a6"}.isdisjoint(keys) and {"a0", "b0"} <= set(keys)
    n_b = sum(k.startswith("b") for k in keys)
    assert 0 < n_b < 8
    # Every sample that the shards' headers show is accounted for: delivered or skipped by reason
    # (a pattern has no manifest, so what lay past the cut is reported as the truncated_tar).
    from mmssl.data.reader import count_samples

    visible = 8 + count_samples(str(damaged_shards / "x-000001.tar"))
    assert stats["samples"] == len(keys) == 5 + n_b
    accounted = sum(stats.get(r, 0) for r in ("samples", "corrupt_image", "missing_image", "empty_caption",
                                                "missing_caption", "unread_samples"))
    assert accounted == visible


def test_drop_last_refills_batches_that_bad_samples_left_short(damaged_shards):
    spec = str(damaged_shards / "x-000000.tar")
    counts = []
    for rank in range(2):
        loader = build_loader(spec, [ImageField(train_transform(16)), TextField()], 4, rank=rank, world_size=2)
        batches = list(loader)
        counts.append(len(batches))
        assert all(len(b["key"]) == 4 for b in batches)
    assert counts == [1, 1]  # rank 0 met 3 bad samples and reread its piece; DDP would not stall


def test_nothing_is_ever_unpickled(image_shards, tmp_path):
    """A shard member that is a pickle with a side effect must reach no unpickler."""
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    payload = pickle.dumps(Exploit())
    with tarfile.open(sorted(image_shards.glob("train-*.tar"))[0]) as tar:
        png = tar.extractfile([m for m in tar.getmembers() if m.name.endswith(".png")][0]).read()
    samples = [{"__key__": f"k{i}", "png": png, "cls": b"1", "pyd": payload, "pickle": payload} for i in range(4)]
    write_tar(tmp_path / "evil-000000.tar", samples)
    loader = build_loader(str(tmp_path / "evil-000000.tar"), [ImageField(train_transform(8)), LabelField()], 2)
    batches = list(loader)
    assert len(batches) == 2 and not marker.exists()
    assert all(set(b) == {"key", "image", "label"} for b in batches)
    from conftest import make_shards

    make_shards("webdataset", tmp_path / "evil-000000.tar", tmp_path / "clean")
    assert not marker.exists()
    names = [n for p in (tmp_path / "clean").glob("*.tar") for n in tarfile.open(p).getnames()]
    assert names and not any(n.endswith((".pyd", ".pickle")) for n in names)


def test_resampled_stream_has_a_fixed_number_of_batches(image_shards):
    for rank in range(2):
        loader = build_loader(image_shards, [LabelField()], 4, rank=rank, world_size=2, num_workers=2,
                              resampled=True, epoch_batches=7)
        assert len(loader) == 7
        assert [len(list(loader)), len(list(loader))] == [7, 7]


def test_weighted_mixture_follows_the_weights(image_shards, tmp_path):
    from conftest import make_shards

    other = tmp_path / "other"
    src = tmp_path / "src" / "x"
    src.mkdir(parents=True)
    for p in sorted(image_shards.glob("train-*.tar"))[:1]:
        with tarfile.open(p) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".png"):
                    (src / f"copy_{Path(m.name).stem}.png").write_bytes(tar.extractfile(m).read())
    make_shards("images", tmp_path / "src", other)
    mix = [{"spec": str(image_shards), "weight": 0.8}, {"spec": str(other), "weight": 0.2}]
    loader = build_loader(mix, [LabelField()], 10, epoch_batches=40, seed=0)
    keys = [k for b in loader for k in b["key"]]
    from_other = sum(k.startswith("x_copy") for k in keys) / len(keys)
    assert len(keys) == 400 and 0.12 < from_other < 0.28


def test_pipe_urls_stream_through_gopen(image_shards):
    shards = sorted(image_shards.glob("train-*.tar"))
    spec = [f"pipe:cat {p}" for p in shards]
    with pytest.raises(DataSpecError, match="set resampled=true and epoch_batches"):
        build_loader(spec, [LabelField()], 2)
    loader = build_loader(spec, [LabelField()], 2, resampled=True, epoch_batches=3)
    assert [len(b["key"]) for b in loader] == [2, 2, 2]


@pytest.mark.parametrize("spec, split, message", [
    ("/no/such/shards-{000..001}.tar", "train", "shard not found: /no/such/shards-000.tar (and 1 more)"),
    ("IMAGES", "test", "has no 'test' split (it has: train, val)"),
    ("EMPTY", "train", "no manifest.json and no .tar shards in EMPTY"),
])
def test_bad_data_specs_name_the_problem(image_shards, tmp_path, spec, split, message):
    spec = str(image_shards) if spec == "IMAGES" else str(tmp_path) if spec == "EMPTY" else spec
    message = message.replace("EMPTY", str(tmp_path))
    with pytest.raises(DataSpecError) as info:
        build_loader(spec, [LabelField()], 2, split=split)
    assert message in str(info.value)


def test_too_small_for_the_world_is_a_clear_error(image_shards):
    with pytest.raises(DataSpecError, match="cannot fill one batch of 64 on each of 2 ranks"):
        build_loader(image_shards, [LabelField()], 64, world_size=2, rank=0).__len__()


def test_only_requested_members_are_read(image_shards):
    """Asking for labels only: image bytes are never read into memory, let alone decoded."""
    from mmssl.data.reader import read_segment
    from mmssl.data.shards import Segment

    shard = str(sorted(image_shards.glob("train-*.tar"))[0])
    sample = next(read_segment(Segment(shard, 0, 10), {"cls"}, lambda *a: None))
    assert set(sample) == {"__key__", "__url__", "cls"}
    assert Counter(len(b["key"]) for b in build_loader(shard, [LabelField()], 1, shuffle=False))


def test_a_stream_without_usable_samples_stops_with_the_reason(image_shards):
    """Image-only shards asked for captions: every sample lacks one; say so instead of spinning."""
    loader = build_loader(image_shards, [LabelField(), TextField()], 2, num_workers=1)
    with pytest.raises(DataSpecError) as info:
        list(loader)
    assert "too few usable samples" in str(info.value) and "missing_caption" in str(info.value)


def test_the_training_loader_takes_every_loader_key_of_the_config(image_shards):
    """data.prefetch_factor and data.pin_memory reach the DataLoader (pinning only where a GPU is)."""
    from mmssl.config import merge
    from mmssl.data import training_loader
    from mmssl.train import TRAIN_DEFAULTS

    cfg = merge(TRAIN_DEFAULTS, None, [f"data.train={image_shards}", "data.prefetch_factor=5", "num_workers=1",
                                       "batch_size=3", "data.shuffle_buffer=7", "seed=4"])
    loader = training_loader(cfg, [LabelField()])
    assert loader.prefetch_factor == 5 and loader.num_workers == 1 and loader.stream.batch_size == 3
    assert loader.stream.shuffle_buffer == 7 and loader.stream.seed == 4
    assert loader.pin_memory is torch.cuda.is_available() and len(next(iter(loader))["label"]) == 3
