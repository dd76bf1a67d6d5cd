"""Benchmarks that must run where we cannot: gpu_throughput.py is written for one GPU and has never
run on one here, so its whole path (models, plain loop, fit in memory and on shards, FLOP count,
table, record) is run on the CPU with tiny models."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.slow
def test_gpu_throughput_runs_every_workload_end_to_end_on_tiny_models(caption_shards, motion_shards, tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_throughput.py"), "--small", "--steps", "1",
                           "--workers", "1", "--images", str(caption_shards), "--videos", str(motion_shards),
                           "--out", str(out)], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = proc.stdout.strip().splitlines()
    assert table[0].startswith("cpu, bf16") and "fit÷plain" in table[1]
    rows = {r["workload"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"clip_vit_b16", "videomae_vit_b", "simclr_resnet50", "simclr_r50_gpu_aug", "simclr_r50_gpu_decode"}
    for r in rows.values():  # every path ran and was timed: memory, shards, FLOPs
        assert r["plain_per_s"] > 0 and r["fit_per_s"] > 0 and r["shards_per_s"] > 0 and r["flop_per_step"] > 0, r
        assert r["note"] == ""
