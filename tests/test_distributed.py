"""Two real processes (gloo on CPU, launched by accelerate): global negatives and the recipe."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT


def accelerate_2proc(script: str, *args: str, timeout=600) -> subprocess.CompletedProcess:
    """The launch command that really starts 2 ranks on one CPU machine (see ENVIRONMENT.md)."""
    with socket.socket() as s:  # a free rendezvous port, so that launches in parallel test workers never meet
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--main_process_port", str(port), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           script, *args]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_clip_loss_and_gradients_match_one_process_over_the_full_batch(tmp_path):
    script = str(ROOT / "tests" / "scripts" / "clip_global_batch.py")
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    subprocess.run([sys.executable, script, str(one)], check=True, cwd=ROOT, env={**os.environ, "ACCELERATE_USE_CPU": "1"})
    accelerate_2proc(script, str(two))
    a, b = load_file(str(one)), load_file(str(two))
    assert set(a) == set(b) and len(a) > 4
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=1e-5, msg=k)
    assert a["grad/logit_scale"].abs() > 0  # the temperature is learned through global negatives too


@pytest.mark.slow
def test_clip_recipe_runs_with_two_processes(caption_shards, tmp_path):
    run = tmp_path / "run2"
    proc = accelerate_2proc(str(ROOT / "recipes" / "clip.py"), "--config", str(ROOT / "recipes/configs/clip_demo.yaml"),
                            f"output_dir={run}", f"data.train={caption_shards}", f"data.val={caption_shards}",
                            "max_steps=4", "batch_size=4", "save_every=2", "eval_every=0", "log_every=1",
                            "image_size=32", "num_workers=1", "tensorboard=false")
    assert (run / "checkpoints" / "step_0000004" / "data_rank1.json").exists()
    assert (run / "encoder" / "image" / "model.safetensors").exists()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert sum('"loss"' in ln for ln in lines) == 4
    assert "samples_per_s" in lines[0]
    del proc
