"""JPEG decoding on the training device (mmssl.data.device_decode), checked on the CPU, where it
must give the squares the workers give bit for bit: per kind of file, for a file only a full
decode finds damaged, and through the recipe, whose losses must not change."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import ROOT
from mmssl.data import ImageField, SkipSample
from mmssl.data.device_augment import load_transform
from mmssl.data.device_decode import DeviceDecode, EncodedJpegField
from test_train import ENV

SIDE = 40


def jpeg(img: Image.Image, **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", **options)
    return buf.getvalue()


def without_segment(data: bytes, marker: int) -> bytes:
    """`data` with every header segment of type `marker` removed (the header is read up to the scan)."""
    out, i = bytearray(data[:2]), 2
    while data[i + 1] != 0xDA:  # start of scan: the rest is entropy-coded data and the end marker
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if data[i + 1] != marker:
            out += data[i:i + 2 + length]
        i += 2 + length
    return bytes(out + data[i:])


@pytest.fixture(scope="module")
def samples(stamp_tree) -> dict[str, dict]:
    """One sample per kind of file a user's corpus holds, from real photos with transparency."""
    photos = sorted(p for p in stamp_tree.rglob("*.png") if p.name != "broken.png")
    rgb = [Image.open(p).convert("RGB") for p in photos[:6]]
    files = {"baseline": ("jpg", jpeg(rgb[0], quality=90)),
             "progressive": ("jpg", jpeg(rgb[1], quality=80, progressive=True)),
             "grey": ("jpg", jpeg(rgb[2].convert("L"), quality=90)),
             "full_chroma": ("jpeg", jpeg(rgb[3], quality=95, subsampling=0)),
             "cmyk": ("jpg", jpeg(rgb[4].convert("CMYK"))),
             "png_with_alpha": ("png", photos[5].read_bytes()),
             "cut_short": ("jpg", (stamp_tree / "food" / "cut.jpg").read_bytes())}
    return {name: {"__key__": name, ext: data} for name, (ext, data) in files.items()}


def test_the_device_makes_the_workers_squares_bit_for_bit(samples):
    field, workers = EncodedJpegField(SIDE), ImageField(load_transform(SIDE))
    kept = [s for name, s in samples.items() if name != "cut_short"]
    items = [field.decode(s) for s in kept]
    # Plain JPEGs travel as bytes; CMYK and PNG are decoded in the workers.
    assert [isinstance(it["image"], bytes) for it in items] == [True, True, True, True, False, False]
    batch = field.collate(items)["image"]
    assert len(batch) == len(kept) and batch.decoded.shape == (2, 3, SIDE, SIDE)
    squares = DeviceDecode(SIDE, "cpu")(batch)
    assert squares.dtype == torch.uint8 and squares.shape == (len(kept), 3, SIDE, SIDE)
    for i, s in enumerate(kept):
        assert torch.equal(squares[i], workers.decode(s)["image"]), s["__key__"]
    # A JPEG cut short (no end marker) is skipped in the workers, under the workers' reason.
    with pytest.raises(SkipSample) as ours:
        field.decode(samples["cut_short"])
    with pytest.raises(SkipSample) as theirs:
        workers.decode(samples["cut_short"])
    assert ours.value.reason == theirs.value.reason == "corrupt_image"


def test_a_jpeg_only_a_full_decode_finds_damaged_is_counted_and_the_batch_keeps_its_size(samples):
    good = samples["baseline"]
    # No quantisation table: the header reads as a plain RGB JPEG, but neither libjpeg-turbo nor Pillow decodes it.
    damaged = {"__key__": "no_tables", "jpg": without_segment(good["jpg"], 0xDB)}
    field, workers = EncodedJpegField(SIDE), ImageField(load_transform(SIDE))
    with pytest.raises(SkipSample, match="corrupt_image"):
        workers.decode(damaged)
    order = [samples["grey"], damaged, good, samples["cmyk"]]
    counted = {}
    decode = DeviceDecode(SIDE, "cpu", lambda reason, n: counted.update({reason: counted.get(reason, 0) + n}))
    squares = decode(field.collate([field.decode(s) for s in order])["image"])
    assert counted == {"corrupt_image": 1} and squares.shape[0] == 4
    assert torch.equal(squares[1], squares[0])  # its slot repeats the first good image
    for i in (0, 2, 3):
        assert torch.equal(squares[i], workers.decode(order[i])["image"])


def simclr_cmd(shards: Path, run: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "recipes" / "image_ssl.py"), "--config", str(ROOT / "recipes/configs/simclr_demo.yaml"),
            f"output_dir={run}", f"data.train={shards}", "data.val=", "batch_size=8", "num_workers=2", "log_every=1",
            "max_steps=4", "tensorboard=false", "warmup_steps=2", "augment.on=device", *extra]


def losses(run: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


@pytest.mark.slow
def test_simclr_trains_the_same_whether_the_workers_or_the_device_decode(jpeg_shards, tmp_path):
    runs, said = {}, {}
    for where in ("workers", "device"):
        runs[where] = tmp_path / where
        said[where] = subprocess.run(simclr_cmd(jpeg_shards, runs[where], f"augment.decode={where}"), check=True,
                                     env=ENV, capture_output=True, text=True).stdout
    assert "not plain JPEGs" not in said["device"]  # every image was decoded by the device
    assert len(losses(runs["device"])) == 4 and losses(runs["device"]) == losses(runs["workers"])
    assert (runs["device"] / "encoder" / "model.safetensors").exists()


def test_decoding_on_the_device_without_augmenting_there_is_refused_in_one_line(jpeg_shards, tmp_path):
    cmd = simclr_cmd(jpeg_shards, tmp_path / "run", "augment.decode=device")
    cmd.remove("augment.on=device")
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]
    assert "augment.decode does nothing with augment.on=workers" in proc.stderr and not (tmp_path / "run").exists()
