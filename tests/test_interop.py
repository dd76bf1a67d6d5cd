"""mmssl beside the tools its users already run: open_clip's training extra pins webdataset 0.2.x,
and setup.cfg's ranges must let both live in one environment, reading the same shards."""
from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from conftest import ROOT

OPEN_CLIP_WEBDATASET = "0.2.86"  # the newest webdataset open_clip_torch[training] 3.3 accepts (<=0.2.86)


def test_install_requirements_are_ranges_that_admit_open_clip_and_img2dataset():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    reqs = {Requirement(line).name: Requirement(line) for line in cfg["options"]["install_requires"].split("\n") if line}
    assert not [r for r in reqs.values() if str(r.specifier).startswith("==")], "pins belong in constraints.txt"
    assert reqs["webdataset"].specifier.contains(OPEN_CLIP_WEBDATASET)
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    for name, req in reqs.items():  # the pinned stack satisfies the ranges it is meant to test
        pinned = pins.get(name) or pins.get(name.replace("-", "_")) or pins.get(name.capitalize())
        assert pinned is None or req.specifier.contains(pinned, prereleases=True), (name, pinned)


@pytest.mark.slow
def test_open_clip_training_reads_our_shards_beside_mmssl(caption_shards, tmp_path):
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps", "--target",
           str(site), f"webdataset=={OPEN_CLIP_WEBDATASET}", "open_clip_torch==3.3.0", "ftfy", "regex", "timm==1.0.22",
           "pandas", "python-dateutil", "pytz", "tzdata", "six", "wcwidth"]
    subprocess.run(pip, check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "scripts" / "open_clip_reads_our_shards.py"),
                           str(caption_shards)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["webdataset"].startswith(str(site))  # open_clip's webdataset, not ours, was the one in use
    assert out["mmssl_samples"] == out["manifest_train"]
    # open_clip pads its last batch from the stream: at least every sample, fewer than one extra batch.
    assert out["manifest_train"] <= out["open_clip_samples"] < out["manifest_train"] + 4
    assert out["image_shape"][1:] == [3, 224, 224]


def img2dataset_venv() -> Path:
    """img2dataset 1.47 with its own dependencies, in a venv of its own (it pins webdataset < 0.3 and
    pulls albumentations, pandas, pyarrow and wandb): the tool as users install it."""
    venv = ROOT / ".venv-img2dataset"
    exe = venv / "bin" / "img2dataset"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                        "img2dataset==1.47.0"], check=True, capture_output=True)
    return exe


@pytest.mark.slow
def test_real_img2dataset_output_trains_and_reshards_as_it_is(stamp_tree, tmp_path):
    """img2dataset downloads real photos (file:// URLs, offline) into its own layout; that folder is
    read as data without re-sharding, inspected, re-sharded, and trained on by a recipe."""
    photos = sorted(p for p in stamp_tree.rglob("*.png") if p.name != "broken.png")
    exe = img2dataset_venv()
    folders = {}
    for name, chosen in (("train", photos[::2]), ("val", photos[1::2])):
        urls = tmp_path / f"{name}.csv"
        urls.write_text("url,caption\n" + "".join(f"file://{p},{p.stem.replace('_', ' ')}\n" for p in chosen))
        folders[name] = tmp_path / f"img2dataset_{name}"
        subprocess.run([str(exe), "--url_list", str(urls), "--input_format", "csv", "--url_col", "url",
                        "--caption_col", "caption", "--output_folder", str(folders[name]), "--output_format",
                        "webdataset", "--image_size", "64", "--processes_count", "1", "--thread_count", "2",
                        "--number_sample_per_shard", "8", "--enable_wandb", "False"],
                       check=True, capture_output=True, cwd=tmp_path)
        assert list(folders[name].glob("*_stats.json")) and not (folders[name] / "manifest.json").exists()

    from mmssl.data import ImageField, TextField, build_loader, eval_transform

    loader = build_loader(str(folders["train"]), [ImageField(eval_transform(32)), TextField()], 4, shuffle=False,
                          drop_last=False)
    assert loader.stream.sources[0].total == len(photos[::2])  # counted from img2dataset's stats files
    assert sum(len(b["key"]) for b in loader) == len(photos[::2])
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "inspect_shards.py"), str(folders["train"]),
                           "--fields", "image,text", "--workers", "0"], capture_output=True, text=True)
    assert proc.returncode == 0 and f"delivered {len(photos[::2])}; skipped: none" in proc.stdout, proc.stderr
    out = tmp_path / "resharded"
    subprocess.run([sys.executable, str(ROOT / "tools" / "make_shards.py"), "webdataset", str(folders["train"]),
                    str(out), "--no-progress"], check=True, capture_output=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert sum(e["count"] for e in manifest["splits"].values()) == len(photos[::2]) and not manifest["skipped"]

    run = tmp_path / "clip"
    proc = subprocess.run([sys.executable, str(ROOT / "recipes" / "clip.py"), "--config",
                           str(ROOT / "recipes/configs/clip_demo.yaml"), f"data.train={folders['train']}",
                           f"data.val={folders['val']}", f"output_dir={run}", "max_steps=2", "batch_size=4",
                           "image_size=32", "num_workers=0", "tensorboard=false", "save_every=2"],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    final = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in ln][-1]
    assert final["eval_samples"] == len(photos[1::2]) and "image_to_text_R@1" in final
