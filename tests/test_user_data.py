"""The user's own data, as a new user brings it: hostile names, several captions per image, two
writers at once, a source that changed, folders that are not ours, odd tar members and odd images,
img2dataset folders as they are. Every file here is real and made in the test; nothing is mocked."""
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

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from conftest import ROOT, make_shards
from test_make_shards import all_keys as keys_in
from mmssl.data import DataSpecError, ImageField, LabelField, TextField, build_loader, eval_transform

MAKE_SHARDS = [sys.executable, str(ROOT / "tools" / "make_shards.py")]


def manifest_of(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def add(tar: tarfile.TarFile, name: str, data: bytes = b"", kind=tarfile.REGTYPE, **attrs) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, len(data) if kind == tarfile.REGTYPE else 0
    for k, v in attrs.items():
        setattr(info, k, v)
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def png_bytes(path: Path) -> bytes:
    return path.read_bytes()


# ---- 1. names from data are data -------------------------------------------------------------
def test_a_shard_named_like_a_command_is_a_file_name(image_shards, tmp_path):
    """A folder holding `pipe:touch X;cat a.tar;.tar`: make_shards and the loader read it as a file,
    from the folder itself (the relative listing a shell would give) too; nothing runs."""
    evil = tmp_path / "evil"
    evil.mkdir()
    tar = sorted(image_shards.glob("train-*.tar"))[0]
    (evil / "pipe:touch PWNED;cat a.tar;.tar").write_bytes(tar.read_bytes())
    (evil / "a.tar").write_bytes(tar.read_bytes())
    proc = subprocess.run(MAKE_SHARDS + ["webdataset", ".", str(tmp_path / "clean"), "--no-progress"],
                          cwd=evil, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    code = ("from mmssl.data import build_loader, LabelField\n"
            "print(sum(len(b['key']) for b in build_loader('.', [LabelField()], 1, shuffle=False, drop_last=False)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=evil, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    per_tar = len(tarfile.open(tar).getnames()) // 3  # png, cls, json per sample
    assert int(out.stdout) == 2 * per_tar
    assert not (evil / "PWNED").exists() and not (tmp_path / "PWNED").exists()
    # Every sample of both tars was re-sharded; the second copy's keys were made unique and counted.
    assert len(keys_in(tmp_path / "clean")) == 2 * per_tar
    assert manifest_of(tmp_path / "clean")["notes"]["renamed_keys"] == per_tar


@pytest.mark.parametrize("name", ["pipe:touch PWNED;cat train-000000.tar", "../elsewhere/train-000000.tar",
                                  "https://example.invalid/x.tar", "/etc/passwd"])
def test_a_manifest_naming_a_command_or_another_folder_is_refused(image_shards, tmp_path, name):
    folder = tmp_path / "copy"
    folder.mkdir()
    for p in image_shards.glob("*.tar"):
        (folder / p.name).write_bytes(p.read_bytes())
    manifest = manifest_of(image_shards)
    manifest["splits"]["train"]["shards"][0]["name"] = name
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataSpecError, match="is not a plain file name inside"):
        build_loader(str(folder), [LabelField()], 2)
    # ... and through a tool, one line and exit 2.
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "inspect_shards.py"), str(folder), "--fields", "label"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "PWNED").exists()


# ---- 2. several captions per image -----------------------------------------------------------
def caption_table(stamp_tree: Path, path: Path, images: int, captions: int) -> list[dict]:
    rows = []
    for png in sorted(p for p in stamp_tree.rglob("*.png") if p.name != "broken.png")[:images]:
        for c in range(captions):
            rows.append({"path": png.relative_to(stamp_tree).as_posix(), "caption": f"{png.stem}, caption {c}"})
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "caption"])
        w.writeheader()
        w.writerows(rows)
    return rows


def test_every_caption_of_an_image_is_its_own_sample(stamp_tree, tmp_path):
    table = stamp_tree / "coco_style.csv"
    rows = caption_table(stamp_tree, table, images=10, captions=3)
    out = tmp_path / "caps"
    make_shards("captions", table, out, "--samples-per-shard", "7", "--val-fraction", "0.3")
    keys = keys_in(out)
    assert len(keys) == len(set(keys)) == len(rows) == 30
    # Each sample's json names its image; the captions of one image stay in one split.
    by_image: dict[str, set] = {}
    for tar in out.glob("*.tar"):
        with tarfile.open(tar) as t:
            for m in t.getmembers():
                if m.name.endswith(".json"):
                    by_image.setdefault(json.loads(t.extractfile(m).read())["image_id"], set()).add(tar.name.split("-")[0])
    assert len(by_image) == 10 and all(len(splits) == 1 for splits in by_image.values())
    assert {s for v in by_image.values() for s in v} == {"train", "val"}
    # The loader delivers every row: no two neighbouring rows merge into one sample.
    texts = []
    for split in ("train", "val"):
        loader = build_loader(out, [TextField()], 1, split=split, shuffle=False, drop_last=False)
        texts += [t for b in loader for t in b["text"]]
    assert sorted(texts) == sorted(r["caption"] for r in rows)


def test_kill_9_then_resume_keeps_every_caption_row_once(stamp_tree, tmp_path):
    table = stamp_tree / "many_captions.csv"
    rows = caption_table(stamp_tree, table, images=30, captions=5)
    args = ["captions", str(table), str(tmp_path / "out"), "--samples-per-shard", "4", "--format", "png",
            "--no-progress"]
    kills = 0
    for delay in (0.7, 1.0, 1.3):
        proc = subprocess.Popen(MAKE_SHARDS + args + (["--resume"] if kills else []),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 1, "the writer finished before it could be killed; the test proves nothing"
    make_shards(*args[:-1], "--resume")
    keys = keys_in(tmp_path / "out")
    assert len(keys) == len(set(keys)) == len(rows)
    assert sum(e["count"] for e in manifest_of(tmp_path / "out")["splits"].values()) == len(rows)


# ---- 3. one writer, one consistent folder ----------------------------------------------------
def copies_of_photos(stamp_tree: Path, src: Path, copies: int) -> Path:
    """Real photos of two classes, each `copies` times (enough inputs to stop a writer mid-run)."""
    for cls in ("animals", "food"):
        (src / cls).mkdir(parents=True)
        for p in sorted((stamp_tree / cls).glob("*.png")):
            if p.name != "broken.png":
                for copy in range(copies):
                    (src / cls / f"{p.stem}_{copy}.png").write_bytes(p.read_bytes())
    return src


@pytest.fixture
def slow_source(stamp_tree, tmp_path) -> Path:
    return copies_of_photos(stamp_tree, tmp_path / "src", 6)


@pytest.mark.slow
def test_a_second_writer_is_refused_and_a_dead_ones_lock_is_taken_over(stamp_tree, tmp_path):
    slow_source = copies_of_photos(stamp_tree, tmp_path / "src", 40)
    out = tmp_path / "out"
    args = ["images", str(slow_source), str(out), "--format", "png", "--no-progress"]
    first = subprocess.Popen(MAKE_SHARDS + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while not (out / ".lock").exists() or not (out / ".lock").read_text():
        assert time.time() < deadline and first.poll() is None
        time.sleep(0.05)
    second = subprocess.run(MAKE_SHARDS + args + ["--resume"], capture_output=True, text=True)
    assert first.poll() is None, "the first writer finished too soon; the test proves nothing"
    assert second.returncode == 2
    assert len(second.stderr.strip().splitlines()) == 1 and f"pid {first.pid}" in second.stderr
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    # The lock file still names the dead writer; the kernel released its lock, so --resume proceeds.
    assert str(first.pid) in (out / ".lock").read_text()
    make_shards(*args[:-1], "--resume")
    assert len(keys_in(out)) == sum(1 for _ in slow_source.rglob("*.png"))


def test_resume_refuses_a_changed_source_and_overwrite_rebuilds(slow_source, tmp_path):
    out = tmp_path / "out"
    make_shards("images", slow_source, out)
    before = manifest_of(out)
    (slow_source / "zebras").mkdir()  # a new class between runs would shift every label after it
    (slow_source / "zebras" / "z.png").write_bytes(next(slow_source.rglob("*.png")).read_bytes())
    proc = make_shards("images", slow_source, out, "--resume", check=False)
    assert proc.returncode == 2 and "the source changed" in proc.stderr and "zebras" in proc.stderr
    assert manifest_of(out) == before  # nothing was touched
    make_shards("images", slow_source, out, "--overwrite")
    assert manifest_of(out)["labels"] == ["animals", "food", "zebras"]


@pytest.mark.slow
def test_folders_that_hold_someone_elses_files(image_shards, slow_source, tmp_path):
    out = tmp_path / "theirs"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"their": "manifest"}))
    (out / "notes.txt").write_text("mine")
    proc = make_shards("images", slow_source, out, check=False)
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    assert json.loads((out / "manifest.json").read_text()) == {"their": "manifest"}
    proc = make_shards("images", slow_source, out, "--resume", check=False)
    assert proc.returncode == 2 and "did not write" in proc.stderr
    # A shard-named tar that no record of ours lists is not ours to delete.
    (out / "train-000007.tar").write_bytes(b"their tar")
    proc = make_shards("images", slow_source, out, "--overwrite", check=False)
    assert proc.returncode == 2 and "train-000007.tar is not listed" in proc.stderr
    (out / "train-000007.tar").unlink()
    make_shards("images", slow_source, out, "--overwrite", "--samples-per-shard", "50")
    first = sorted(p.name for p in out.glob("*.tar"))
    # --overwrite again: what we wrote is replaced, what they wrote stays.
    make_shards("images", slow_source, out, "--overwrite", "--samples-per-shard", "1000")
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in out.glob("*.tar")) == ["train-000000.tar", "val-000000.tar"] != first


# ---- 4. every bad input counted, none fatal --------------------------------------------------
def test_odd_tar_members_are_listed_and_keys_made_unique(stamp_tree, tmp_path):
    png = png_bytes(sorted((stamp_tree / "food").glob("*.png"))[0])
    src = tmp_path / "tars"
    src.mkdir()
    with tarfile.open(src / "a.tar", "w", format=tarfile.GNU_FORMAT) as t:
        for key in ("x y", "x_y", "dup"):  # `x y` and `x_y` collide once cleaned
            add(t, f"{key}.png", png)
            add(t, f"{key}.txt", f"caption of {key}".encode())
        add(t, "link.png", kind=tarfile.SYMTYPE, linkname="/etc/passwd")
        add(t, "hard.png", kind=tarfile.LNKTYPE, linkname="dup.png")
        add(t, "pipe.png", kind=tarfile.FIFOTYPE)
        add(t, "dev.png", kind=tarfile.CHRTYPE, devmajor=1, devminor=3)
        add(t, "README", b"no extension")
        add(t, "folder/", kind=tarfile.DIRTYPE)  # directories are not samples: no entry
    with tarfile.open(src / "b.tar", "w") as t:
        add(t, "dup.png", png)  # the same key in a second tar
        add(t, "dup.txt", b"another dup")
    out = tmp_path / "out"
    make_shards("webdataset", src, out, "--val-fraction", "0")
    manifest = manifest_of(out)
    reasons = sorted((Path(s["path"]).name, s["reason"].split(":")[0]) for s in manifest["skipped"])
    assert reasons == [("a.tar:README", "member_without_extension"),
                       ("a.tar:dev.png (char device)", "non_regular_member"),
                       ("a.tar:hard.png (hardlink)", "non_regular_member"),
                       ("a.tar:link.png (symlink)", "non_regular_member"),
                       ("a.tar:pipe.png (fifo)", "non_regular_member")]
    keys = keys_in(out)
    assert len(keys) == len(set(keys)) == 4 and manifest["notes"]["renamed_keys"] == 2
    loader = build_loader(out, [ImageField(eval_transform(16)), TextField()], 1, shuffle=False, drop_last=False)
    texts = sorted(t for b in loader for t in b["text"])
    assert texts == ["another dup", "caption of dup", "caption of x y", "caption of x_y"]
    assert loader.stats["samples"] == manifest["splits"]["train"]["count"] == 4


def test_a_huge_declared_size_is_a_truncated_shard_not_a_crash(image_shards, tmp_path):
    """A header that claims 8 GiB (GNU base-256): counted as truncated_tar, the job goes on."""
    src = tmp_path / "src"
    src.mkdir()
    good = sorted(image_shards.glob("train-*.tar"))[0]
    (src / "good.tar").write_bytes(good.read_bytes())
    data = bytearray(good.read_bytes())
    field = b"\x80" + (8 << 30).to_bytes(11, "big")
    assert tarfile.nti(field) == 8 << 30
    data[124:136] = field
    data[148:156] = b" " * 8
    data[148:156] = b"%06o\0 " % sum(data[:512])
    (src / "hostile.tar").write_bytes(bytes(data))
    from mmssl.data.reader import _octal

    assert _octal(field) == 8 << 30 and _octal(b"\xff" + b"\xff" * 11) == -1  # as tarfile.nti
    out = tmp_path / "out"
    make_shards("webdataset", src, out, "--val-fraction", "0")
    manifest = manifest_of(out)
    assert [s["path"] for s in manifest["skipped"]] == ["hostile.tar"]
    assert "8589934592 bytes" in manifest["skipped"][0]["reason"]
    assert manifest["splits"]["train"]["count"] == len({n.split(".", 1)[0] for n in tarfile.open(good).getnames()})


def test_odd_file_names_and_tables(stamp_tree, tmp_path):
    photo = sorted((stamp_tree / "food").glob("*.png"))[0].read_bytes()
    src = tmp_path / "src"
    (src / "caf\udce9s").mkdir(parents=True)  # a latin-1 folder name: not UTF-8
    (src / "caf\udce9s" / "cr\udce8me.png").write_bytes(photo)
    (src / "plain").mkdir()
    (src / "plain" / "ok.png").write_bytes(photo)
    os.symlink(tmp_path / "gone.png", src / "plain" / "dangling.png")
    out = tmp_path / "out"
    make_shards("images", src, out, "--val-fraction", "0")
    manifest = manifest_of(out)
    assert manifest["labels"] == ["caf\\xe9s", "plain"]
    assert manifest["skipped"] == [{"path": "plain/dangling.png", "reason": "dangling symlink"}]
    assert manifest["splits"]["train"]["count"] == 2

    latin = tmp_path / "latin1.csv"
    latin.write_bytes("path,caption\nplain/ok.png,crème brûlée\n".encode("latin-1"))
    not_objects = tmp_path / "rows.jsonl"
    not_objects.write_text('{"path": "plain/ok.png", "caption": "fine"}\n["plain/ok.png", "a list"]\n')
    for table, message in ((latin, ":2: not UTF-8 (byte 0xe8)"),
                           (not_objects, ":2: each line must be a JSON object, got list")):
        proc = make_shards("captions", table, tmp_path / f"o_{table.stem}", check=False)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"make_shards: error: {table}{message}")


def test_disk_full_is_one_line_and_resume_finishes(slow_source, tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("needs root to mount a 2 MB tmpfs (CI runs as root)")
    try:
        args = ["images", str(slow_source), str(mnt / "out"), "--samples-per-shard", "10", "--format", "png"]
        proc = make_shards(*args, check=False)
        assert proc.returncode == 1
        assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "no space left" in proc.stderr
        assert str(mnt / "out") in proc.stderr and "--resume" in proc.stderr
        assert not list((mnt / "out").glob(".*.tmp")) and not (mnt / "out" / "manifest.json").exists()
        kept = {p.name: p.read_bytes() for p in (mnt / "out").glob("*.tar")}
        assert kept  # the finished shards stay, each complete
        for data in kept.values():
            assert tarfile.open(fileobj=io.BytesIO(data)).getnames()
        moved = tmp_path / "bigger"
        subprocess.run(["cp", "-a", str(mnt / "out"), str(moved)], check=True)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    make_shards(*[str(moved) if a == str(mnt / "out") else a for a in args], "--resume")
    assert len(keys_in(moved)) == len(set(keys_in(moved))) == sum(1 for _ in slow_source.rglob("*.png"))


def test_sixteen_bit_images_are_scaled_and_huge_ones_skipped_before_decoding(tmp_path):
    src = tmp_path / "src" / "scans"
    src.mkdir(parents=True)
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(src / "ramp16.png")
    Image.new("L", (9000, 8000)).save(src / "huge.png")  # 72 MP, over the default budget of 64 MP
    out = tmp_path / "out"
    make_shards("images", tmp_path / "src", out, "--val-fraction", "0")
    manifest = manifest_of(out)
    assert [(s["path"], s["reason"].split(":")[0]) for s in manifest["skipped"]] == [("scans/huge.png", "image too large")]
    loader = build_loader(out, [ImageField(lambda im: v2.functional.to_image(im).as_subclass(torch.Tensor))], 1, shuffle=False)
    img = next(iter(loader))["image"][0].permute(1, 2, 0)
    # The ramp keeps its shape in 8 bits (value / 257), instead of clipping to white above 255.
    assert abs(int(img[32, 32, 0]) - round(int(ramp[32, 32]) / 257)) <= 1
    assert (img == 255).float().mean() < 0.01 and len(img.unique()) > 200
    proc = make_shards("images", tmp_path / "src", tmp_path / "o2", "--max-pixels", "100000000", check=False)
    assert proc.returncode == 0 and "skipped" not in proc.stdout


# ---- 5. what users already have ----------------------------------------------------------------
@pytest.fixture
def img2dataset_folder(stamp_tree, tmp_path) -> Path:
    """The layout img2dataset writes: 00000.tar (NNNNNNNNN.jpg/.txt/.json), 00000_stats.json with
    `successes`, 00000.parquet; no manifest.json."""
    folder = tmp_path / "img2dataset_out"
    folder.mkdir()
    photos = sorted(p for p in stamp_tree.rglob("*.png") if p.name != "broken.png")[:12]
    for shard in range(2):
        with tarfile.open(folder / f"{shard:05d}.tar", "w") as t:
            for i, p in enumerate(photos[shard * 6 : shard * 6 + 6]):
                key = f"{shard:05d}{i:04d}"
                buf = io.BytesIO()
                Image.open(p).convert("RGB").save(buf, "JPEG")
                add(t, f"{key}.jpg", buf.getvalue())
                add(t, f"{key}.txt", p.stem.replace("_", " ").encode())
                add(t, f"{key}.json", json.dumps({"key": key, "status": "success"}).encode())
        (folder / f"{shard:05d}_stats.json").write_text(json.dumps({"count": 6, "successes": 6, "failed_to_download": 0}))
        (folder / f"{shard:05d}.parquet").write_bytes(b"PAR1")
    return folder


def test_an_img2dataset_folder_is_read_as_it_is(img2dataset_folder):
    loader = build_loader(str(img2dataset_folder), [ImageField(eval_transform(16)), TextField()], 4, shuffle=False,
                          drop_last=False)
    assert loader.stream.sources[0].counts == [6, 6]
    assert sum(len(b["key"]) for b in loader) == 12
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "inspect_shards.py"), str(img2dataset_folder),
                           "--fields", "image,text", "--workers", "0"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "12 samples in 2 shards" in proc.stdout and "delivered 12" in proc.stdout


def test_a_split_is_applied_by_shard_name_or_refused(image_shards, tmp_path):
    pattern = str(image_shards / "{train,val}-000000.tar")
    val = build_loader(pattern, [LabelField()], 1, split="val", shuffle=False, drop_last=False)
    assert [os.path.basename(u) for u in val.stream.sources[0].urls] == ["val-000000.tar"]
    with pytest.raises(DataSpecError, match="has no 'test' shards by name"):
        build_loader(pattern, [LabelField()], 1, split="test")
    with pytest.raises(DataSpecError, match="has no 'val' shards by name"):
        build_loader(str(image_shards / "train-{000000..000001}.tar"), [LabelField()], 1, split="val")
