"""tools/make_shards.py: each subcommand end to end (raw files -> shards -> pipeline -> tensors),
bad inputs, crash safety with kill -9 + --resume, and img2dataset-layout input."""
from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT, make_shards
from mmssl.data import AudioField, ImageField, LabelField, TextField, VideoField, build_loader, eval_transform


def tar_members(directory: Path) -> dict[str, list[str]]:
    """{shard name: member names} for every tar in `directory`."""
    return {p.name: tarfile.open(p).getnames() for p in sorted(directory.glob("*.tar"))}


def all_keys(directory: Path) -> list[str]:
    keys = []
    for names in tar_members(directory).values():
        for n in names:
            k = n.split(".", 1)[0]
            if not keys or keys[-1] != k:
                keys.append(k)
    return keys


def check_manifest_agrees(out: Path) -> dict:
    """The manifest's shards, counts and hashes match the tars on disk."""
    from mmssl.data.writer import sha256_file

    manifest = json.loads((out / "manifest.json").read_text())
    sizes = json.loads((out / "sizes.json").read_text())
    on_disk = {p.name for p in out.glob("*.tar")}
    listed = {s["name"] for e in manifest["splits"].values() for s in e["shards"]}
    assert listed == on_disk
    for entry in manifest["splits"].values():
        assert entry["count"] == sum(s["count"] for s in entry["shards"])
        for s in entry["shards"]:
            assert sizes[s["name"]] == s["count"] == len(set(all_keys_of(out / s["name"])))
            assert sha256_file(out / s["name"]) == s["sha256"]
    assert not list(out.glob(".*.tmp")), "no temporary shard may remain"
    return manifest


def all_keys_of(tar_path: Path) -> list[str]:
    return [n.split(".", 1)[0] for n in tarfile.open(tar_path).getnames()]


def test_images_round_trip(image_shards, stamp_tree):
    manifest = check_manifest_agrees(image_shards)
    assert manifest["labels"] == ["animals", "food", "vehicles"]
    n_inputs = sum(1 for p in stamp_tree.rglob("*") if p.suffix in (".png", ".jpg"))
    reasons = {Path(s["path"]).name: s["reason"] for s in manifest["skipped"]}
    assert set(reasons) == {"broken.png", "cut.jpg"}
    assert all(r.startswith("corrupt image") for r in reasons.values())
    total = sum(e["count"] for e in manifest["splits"].values())
    assert total == n_inputs - 2
    assert set(manifest["splits"]) == {"train", "val"}
    assert manifest["modalities"]["image"]["count"] == total
    keys = [k for split_dir in [image_shards] for k in all_keys(split_dir)]
    assert len(keys) == len(set(keys)) and not any("." in k for k in keys)

    loader = build_loader(image_shards, [ImageField(eval_transform(32)), LabelField()], 4, shuffle=False, drop_last=False)
    batches = list(loader)
    assert batches[0]["image"].shape == (4, 3, 32, 32) and batches[0]["image"].dtype == torch.float32
    labels = torch.cat([b["label"] for b in batches])
    assert len(labels) == manifest["splits"]["train"]["count"]
    assert set(labels.tolist()) <= {0, 1, 2}


def test_split_dirs_keep_the_official_splits(fashion_shards):
    """An ImageNet-style tree (train/<class>/, test/<class>/): the folders are the splits."""
    manifest = check_manifest_agrees(fashion_shards)
    assert set(manifest["splits"]) == {"train", "test"}
    assert manifest["splits"]["train"]["count"] == 400 and manifest["splits"]["test"]["count"] == 100
    assert manifest["labels"][:3] == ["ankle_boot", "bag", "coat"] and len(manifest["labels"]) == 10
    loader = build_loader(fashion_shards, [LabelField()], 50, split="test", shuffle=False, drop_last=False)
    labels = torch.cat([b["label"] for b in loader])
    assert torch.bincount(labels, minlength=10).tolist() == [10] * 10


def test_class_folders_are_written_in_a_seeded_shuffle(fashion_shards, tmp_path):
    """Sorted paths would put each class's files together, and a loader's shuffle buffer only mixes
    nearby samples: batches of one or two classes. Shards are written in a seeded shuffle instead;
    `--keep-order` keeps the sorted order."""
    def first_labels(out, n=50):
        loader = build_loader(out, [LabelField()], n, split="train", shuffle=False, drop_last=False)
        return next(iter(loader))["label"]

    assert len(first_labels(fashion_shards).unique()) >= 8  # 50 of 400 samples, 10 classes
    raw = fashion_shards / ".raw"
    again, ordered = tmp_path / "again", tmp_path / "ordered"
    make_shards("images", raw, again, "--split-dirs")
    make_shards("images", raw, ordered, "--split-dirs", "--keep-order")
    assert torch.equal(first_labels(again), first_labels(fashion_shards))  # the same seed, the same order
    assert len(first_labels(ordered).unique()) <= 2


def test_keys_are_stable_across_runs(stamp_tree, image_shards, tmp_path):
    make_shards("images", stamp_tree, tmp_path / "again", "--samples-per-shard", "5", "--val-fraction", "0.2",
                "--workers", "2")
    assert sorted(all_keys(tmp_path / "again")) == sorted(all_keys(image_shards))


def test_images_reencode_on_request(stamp_tree, tmp_path):
    make_shards("images", stamp_tree, tmp_path / "o", "--max-size", "40", "--format", "jpg")
    from PIL import Image

    with tarfile.open(sorted((tmp_path / "o").glob("train-*.tar"))[0]) as tar:
        jpgs = [m for m in tar.getmembers() if m.name.endswith(".jpg")]
        assert jpgs and not any(m.name.endswith(".png") for m in tar.getmembers())
        img = Image.open(io.BytesIO(tar.extractfile(jpgs[0]).read()))
        assert max(img.size) <= 40 and img.format == "JPEG"


def test_captions_table_with_empty_caption_and_missing_path(stamp_tree, tmp_path):
    rows = []
    for p in sorted((stamp_tree / "vehicles").glob("*.png"))[:6]:
        rows.append({"path": f"vehicles/{p.name}", "caption": f"a photo of {p.stem}", "source_id": p.stem})
    rows.append({"path": "vehicles/nowhere.png", "caption": "gone", "source_id": "x"})
    rows.append({"path": rows[0]["path"].replace(".png", ".png"), "caption": "   ", "source_id": "y"})
    rows[-1]["path"] = f"food/{sorted((stamp_tree / 'food').glob('*.png'))[0].name}"
    table = stamp_tree / "captions_test.tsv"
    with open(table, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "caption", "source_id"], delimiter="\t")
        w.writeheader()
        w.writerows(rows)
    out = tmp_path / "cap"
    proc = make_shards("captions", table, out)
    manifest = check_manifest_agrees(out)
    reasons = sorted(s["reason"].split(":")[0] for s in manifest["skipped"])
    assert reasons == ["empty caption", "unreadable path"]
    # A new user gets a val split by default (10% by key hash), and the report names each split.
    assert sum(e["count"] for e in manifest["splits"].values()) == 6 and set(manifest["splits"]) == {"train", "val"}
    assert "skipped 2 inputs" in proc.stdout and "train-{000000..000000}.tar" in proc.stdout
    assert "val-{000000..000000}.tar" in proc.stdout
    loader = build_loader(out, [ImageField(eval_transform(24)), TextField()], 3, shuffle=False, drop_last=False)
    batch = next(iter(loader))
    assert batch["image"].shape == (3, 3, 24, 24)
    assert batch["text"][0].startswith("a photo of")
    with tarfile.open(out / "train-000000.tar") as tar:
        meta = json.loads(tar.extractfile([m for m in tar.getmembers() if m.name.endswith(".json")][0]).read())
    assert "source_id" in meta and "source" in meta  # other table columns go into json


def test_videos_round_trip_keeps_audio_and_splits_clips(video_dir, tmp_path):
    out = tmp_path / "vid"
    make_shards("videos", video_dir, out, "--clip-seconds", "1", "--fps", "6", "--max-size", "64",
                "--max-seconds", "4", "--samples-per-shard", "8", "--val-fraction", "0")
    manifest = check_manifest_agrees(out)
    skipped = {Path(s["path"]).name: s["reason"] for s in manifest["skipped"]}
    assert list(skipped) == ["corrupt.mp4"] and skipped["corrupt.mp4"].startswith("corrupt video")
    keys = all_keys(out)
    # 6 motion clips of 2 s -> 2 clips each; vtest.avi cut to its first 4 s -> 4 clips.
    assert len(keys) == 6 * 2 + 4
    assert sum(k.endswith("_000") for k in keys) == 7 and sum(k.endswith("_001") for k in keys) == 7
    video = manifest["modalities"]["video"]
    # vtest.avi has no sound; a motion clip lacks it only where its real sound is shorter than 1 s.
    assert video["has_audio"]["true"] + video["has_audio"]["false"] == 16
    assert 4 <= video["has_audio"]["false"] <= 6
    assert video["fps"]["values"] == [6.0]
    assert manifest["labels"] == ["pan_left", "zoom_in"]

    loader = build_loader(out, [VideoField(num_frames=4, stride=1, size=32, train=False),
                                AudioField(seconds=0.5, train=False)], 4, shuffle=False, drop_last=False)
    batches = list(loader)
    assert batches[0]["video"].shape == (4, 4, 3, 32, 32)
    assert batches[0]["audio"].shape == (4, 8000)
    # Clips without sound are skipped and counted, by reason; every clip is accounted for.
    stats = loader.stats
    silent = video["has_audio"]["false"]
    assert stats["no_audio_track"] >= 4
    assert stats["samples"] == 16 - silent
    assert stats["samples"] + sum(stats.get(r, 0) for r in ("no_audio_track", "short_audio", "silent_audio")) == 16


def test_videos_without_normalisation_keep_mp4_bytes(video_dir, tmp_path):
    out = tmp_path / "raw"
    make_shards("videos", video_dir / "zoom_in", out, "--val-fraction", "0")
    original = sorted(p.read_bytes() for p in (video_dir / "zoom_in").glob("*.mp4"))
    with tarfile.open(out / "train-000000.tar") as tar:
        stored = sorted(tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".mp4"))
    assert stored == original


def test_audio_folder_and_transcripts(sounds, tmp_path):
    import soundfile

    src = tmp_path / "speech"
    (src / "dog").mkdir(parents=True)
    (src / "cat").mkdir()
    for i, s in enumerate(sounds[:4]):
        (src / ("dog" if i < 2 else "cat") / s.name).write_bytes(s.read_bytes())
    (src / "cat" / "broken.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    out = tmp_path / "aud"
    make_shards("audio", src, out, "--sample-rate", "8000", "--val-fraction", "0")
    manifest = check_manifest_agrees(out)
    assert [Path(s["path"]).name for s in manifest["skipped"]] == ["broken.wav"]
    assert manifest["modalities"]["audio"]["sample_rate"]["values"] == [8000]
    with tarfile.open(out / "train-000000.tar") as tar:
        flac = [m for m in tar.getmembers() if m.name.endswith(".flac")][0]
        wave, rate = soundfile.read(io.BytesIO(tar.extractfile(flac).read()))
    assert rate == 8000 and wave.ndim == 1

    table = tmp_path / "t.jsonl"
    table.write_text("".join(json.dumps({"path": f"speech/dog/{s.name}", "transcript": "woof"}) + "\n" for s in sounds[:2]))
    out2 = tmp_path / "aud2"
    make_shards("audio", table, out2, "--caption-col", "transcript", "--val-fraction", "0")
    loader = build_loader(out2, [AudioField(sample_rate=16000, seconds=1.0, n_mels=40), TextField()], 2,
                          shuffle=False, drop_last=False)
    batch = next(iter(loader))
    assert batch["mel"].shape == (2, 1, 40, 101) and batch["text"] == ["woof", "woof"]


def test_img2dataset_layout_is_first_class_input(image_shards, tmp_path):
    """img2dataset writes 00000.tar with NNN.jpg/.txt/.json plus _stats.json and .parquet beside it."""
    from PIL import Image

    src = tmp_path / "img2dataset"
    src.mkdir()
    loader = build_loader(image_shards, [ImageField(lambda im: im)], 1, shuffle=False, drop_last=False)
    for shard in range(2):
        with tarfile.open(src / f"{shard:05d}.tar", "w") as tar:
            for i in range(6):
                key = f"{shard:05d}{i:04d}"
                buf = io.BytesIO()
                Image.new("RGB", (40 + i, 30), (i * 40, 100, 200 - i * 30)).save(buf, "JPEG")
                caption = b"" if (shard, i) == (1, 5) else f"caption {key}".encode()
                members = {"jpg": buf.getvalue(), "txt": caption, "json": json.dumps({"key": key}).encode()}
                if (shard, i) == (0, 2):
                    members["jpg"] = b"\xff\xd8\xff broken"
                if (shard, i) == (0, 3):
                    members["pyd"] = b"\x80\x04K\x01."  # a pickle: never copied
                for ext, data in members.items():
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        (src / f"{shard:05d}_stats.json").write_text(json.dumps({"count": 6}))
        (src / f"{shard:05d}.parquet").write_bytes(b"PAR1")
    del loader
    out = tmp_path / "resharded"
    make_shards("webdataset", src, out, "--samples-per-shard", "4", "--val-fraction", "0")
    manifest = check_manifest_agrees(out)
    reasons = sorted(s["reason"].split(":")[0] for s in manifest["skipped"])
    assert reasons == ["corrupt image", "empty caption"]
    names = [n for names in tar_members(out).values() for n in names]
    assert not any(n.endswith(".pyd") for n in names)
    assert manifest["splits"]["train"]["count"] == 10
    batch = next(iter(build_loader(out, [ImageField(eval_transform(16)), TextField()], 5, shuffle=False)))
    assert batch["image"].shape == (5, 3, 16, 16) and batch["text"][0].startswith("caption 0000")


def test_truncated_input_shard_is_reported(image_shards, tmp_path):
    src = tmp_path / "cut"
    src.mkdir()
    data = (image_shards / "train-000000.tar").read_bytes()
    (src / "a.tar").write_bytes(data[: len(data) // 2])
    out = tmp_path / "o"
    make_shards("webdataset", src, out, "--val-fraction", "0")
    manifest = check_manifest_agrees(out)
    assert any(s["reason"].startswith("truncated_tar") for s in manifest["skipped"])
    assert 0 < manifest["splits"]["train"]["count"] < 5


@pytest.mark.parametrize("args, message", [
    (["images", "/no/such/folder", "OUT"], "source not found: /no/such/folder"),
    (["images", "SRC", "OUT", "--samples-per-shard", "0"], "--samples-per-shard must be >= 1"),
    (["captions", "TABLE", "OUT", "--caption-col", "text"], "has no column 'text'"),
    (["images", "SRC", "OUT", "--val-fraction", "1.5"], "--val-fraction must be in [0, 1)"),
    (["images", "SRC", "OUT", "--bogus"], "unrecognized arguments: --bogus"),
    (["images", "SRC", "OUT", "--split-dirs"], "--split-dirs: no class folders under the split folders"),
    (["images", "SRC", "OUT", "--split-dirs", "--val-fraction", "0.1"], "drop --val-fraction"),
])
def test_bad_source_or_option_is_one_line_and_exit_2(args, message, stamp_tree, tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("path,caption\nanimals/x.png,hi\n")
    args = [str(stamp_tree) if a == "SRC" else str(table) if a == "TABLE" else str(tmp_path / "o") if a == "OUT" else a
            for a in args]
    proc = make_shards(*args, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr


def test_existing_output_needs_resume_or_overwrite(stamp_tree, image_shards):
    proc = make_shards("images", stamp_tree, image_shards, check=False)
    assert proc.returncode == 2 and "--resume" in proc.stderr


def test_no_usable_input_exits_1(tmp_path):
    (tmp_path / "src" / "a").mkdir(parents=True)
    (tmp_path / "src" / "a" / "x.png").write_bytes(b"nope")
    proc = make_shards("images", tmp_path / "src", tmp_path / "o", check=False)
    assert proc.returncode == 1 and "no sample could be written" in proc.stdout


def test_kill_9_then_resume_holds_every_input_exactly_once(tmp_path, stamp_tree):
    """Kill the writer at several moments; --resume must finish with each valid input exactly once."""
    src = tmp_path / "many"
    for cls in ("animals", "food", "vehicles"):
        (src / cls).mkdir(parents=True)
        for p in sorted((stamp_tree / cls).glob("*.png")):
            for copy in range(4):  # 4 copies of each photo: enough inputs to kill mid-run
                (src / cls / f"{p.stem}_{copy}.png").write_bytes(p.read_bytes())
    reference = tmp_path / "reference"
    make_shards("images", src, reference, "--samples-per-shard", "3", "--format", "png")
    expected = sorted(all_keys(reference))

    out = tmp_path / "killed"
    cmd = [sys.executable, str(ROOT / "tools" / "make_shards.py"), "images", str(src), str(out),
           "--samples-per-shard", "3", "--format", "png", "--no-progress"]
    kills = 0
    for delay in (0.6, 0.9, 1.2):
        proc = subprocess.Popen(cmd + (["--resume"] if kills else []), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        if proc.returncode == 0:
            break
    assert kills >= 1, "the writer finished before it could be killed; the test proves nothing"
    assert not (out / "manifest.json").exists() or kills == 0
    make_shards("images", src, out, "--samples-per-shard", "3", "--format", "png", "--resume")
    keys = all_keys(out)
    assert sorted(keys) == expected  # every valid input, none twice
    manifest = check_manifest_agrees(out)
    assert sum(e["count"] for e in manifest["splits"].values()) == len(expected)
