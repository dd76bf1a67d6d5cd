"""mmssl beside the tools its users already run: open_clip's training extra pins webdataset 0.2.x,
and setup.cfg's ranges must let both live in one environment, reading the same shards."""
from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys

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
