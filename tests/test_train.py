"""The training loop: exact resume after kill -9, the NaN guard, the run folder, and eval."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def clip_cmd(shards: Path, run: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "recipes" / "clip.py"), "--config", str(ROOT / "recipes/configs/clip_demo.yaml"),
            f"output_dir={run}", f"data.train={shards}", "data.val=", "image_size=32", "batch_size=4",
            "num_workers=2", "log_every=1", "tensorboard=false", "warmup_steps=2", *extra]


def kill_9_after(cmd: list[str], run: Path, checkpoint: str) -> None:
    """Start `cmd` and kill -9 it as soon as `run/checkpoints/<checkpoint>` exists; fails where the
    run ended first (the kill would prove nothing)."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.time() + 300
    while not (run / "checkpoints" / checkpoint).exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def reference_and_resumed(command, tmp_path: Path, kill_at: str) -> tuple[Path, Path]:
    """Run `command(run_dir)` through once, and again killed with -9 at checkpoint `kill_at` then
    resumed; -> the two run folders."""
    ref, run = tmp_path / "ref", tmp_path / "killed"
    subprocess.run(command(ref), check=True, env=ENV, capture_output=True)
    kill_9_after(command(run), run, kill_at)
    subprocess.run(command(run) + ["resume=true"], check=True, env=ENV, capture_output=True)
    return ref, run


def assert_same_parameters(ref: Path, run: Path, checkpoint: str) -> None:
    """The two runs' `checkpoint` hold bit-identical model parameters."""
    a = load_file(str(ref / "checkpoints" / checkpoint / "model.safetensors"))
    b = load_file(str(run / "checkpoints" / checkpoint / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=0, msg=k)


@pytest.mark.slow
def test_kill_9_and_resume_ends_with_the_same_parameters(caption_shards, tmp_path):
    steps = ["max_steps=10", "save_every=3", "keep_checkpoints=5"]
    ref, run = reference_and_resumed(lambda out: clip_cmd(caption_shards, out, *steps), tmp_path, "step_0000006")

    assert_same_parameters(ref, run, "step_0000010")
    opt_a = torch.load(ref / "checkpoints" / "step_0000010" / "optimizer.bin", weights_only=True)
    opt_b = torch.load(run / "checkpoints" / "step_0000010" / "optimizer.bin", weights_only=True)
    for key, state in opt_a["state"].items():
        torch.testing.assert_close(opt_b["state"][key]["exp_avg"], state["exp_avg"], rtol=0, atol=0)
    # metrics.jsonl reads as one run: each step once, the steps after the crash not duplicated
    steps_logged = [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines()
                    if '"loss"' in ln and '"event"' not in ln]
    assert steps_logged == list(range(1, 11))


def test_run_folder_and_eval_cli(caption_shards, tmp_path):
    run = tmp_path / "run"
    subprocess.run(clip_cmd(caption_shards, run, "max_steps=4", "save_every=2", "keep_checkpoints=1",
                            f"data.val={caption_shards}", "tensorboard=true"), check=True, env=ENV, capture_output=True)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_0000004"]  # keep_checkpoints=1
    assert (run / "config.yaml").exists() and (run / "loss.png").stat().st_size > 1000
    assert list((run / "tensorboard").rglob("events.out.tfevents.*"))
    records = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "event" not in r]
    assert {"step", "loss", "lr", "samples_per_s"} <= set(train[0])
    assert any(r.get("event") == "eval" and "image_to_text_R@1" in r for r in records)

    from transformers import AutoModel

    text = AutoModel.from_pretrained(run / "encoder" / "text")  # a standard Hugging Face folder
    assert text.config.hidden_size == 384
    proc = subprocess.run([sys.executable, "-m", "mmssl.eval", str(run), "--task", "knn", "--task", "zero-shot",
                           "--task", "retrieval", "--data", str(caption_shards)], env=ENV, capture_output=True,
                          text=True, check=True, cwd=ROOT)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"knn_top1@20", "knn_top1@200", "zero_shot_top1", "image_to_text_R@10", "text_to_image_R@1"} <= set(result)
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["tasks"] == ["knn", "zero-shot", "retrieval"]


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(caption_shards, tmp_path):
    script = tmp_path / "nan_run.py"
    script.write_text(f'''
import sys, torch
sys.path.insert(0, {str(ROOT)!r})
from mmssl.cli import run_main
from mmssl.data import LabelField, build_loader
from mmssl.config import plain
from mmssl.train import TRAIN_DEFAULTS, fit, start

class Explodes(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.calls = 0
    def forward(self, batch, progress):
        self.calls += 1
        bad = float("nan") if self.calls == 5 else 0.0
        return {{"loss": (self.w * batch["label"].float()).mean() + bad}}

def main(argv):
    cfg = {{**plain(TRAIN_DEFAULTS), "output_dir": {str(tmp_path / "run")!r}, "max_steps": 10, "save_every": 2,
           "batch_size": 2, "tensorboard": False, "num_workers": 0}}
    acc = start(cfg)
    fit(acc, cfg, Explodes(), build_loader({str(caption_shards)!r}, [LabelField()], 2))

run_main(main)
''')
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 1
    line = proc.stderr.strip().splitlines()[-1]
    assert "loss became nan at step 5" in line and "step_0000004" in line
    ckpt = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ckpt.iterdir()) == ["step_0000002", "step_0000004"]
    assert load_file(str(ckpt / "step_0000004" / "model.safetensors"))["w"].isfinite().all()


@pytest.mark.learning
@pytest.mark.parametrize("loss, fall", [("clip", 0.8), ("siglip", 0.9)])
def test_clip_learns_on_real_captions(tmp_path, loss, fall):
    """The loss falls and held-out retrieval and zero-shot beat chance, on the real default corpus."""
    shards = ROOT / "shards" / "default_images"
    if not (shards / "manifest.json").exists():
        subprocess.run([sys.executable, str(ROOT / "tools" / "build_default_corpus.py")], check=True, env=ENV,
                       capture_output=True)
    run = tmp_path / "learn"
    subprocess.run([sys.executable, str(ROOT / "recipes" / "clip.py"), "--config", str(ROOT / "recipes/configs/clip_demo.yaml"),
                    f"output_dir={run}", "max_steps=50", "eval_every=0", "save_every=0", "tensorboard=false",
                    "log_every=5", "image_size=32", f"loss={loss}"], check=True, env=ENV, capture_output=True)
    records = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r and "event" not in r]
    assert sum(losses[-3:]) / 3 < fall * sum(losses[:3]) / 3
    final = [r for r in records if r.get("event") == "eval"][-1]
    assert final["text_to_image_R@10"] > 2 * 10 / final["eval_samples"]
    assert final["zero_shot_top1"] > 2 * final["zero_shot_chance"]


def test_two_named_streams_resume_each_at_its_own_position(fashion_shards, tmp_path):
    """fit on ZippedLoaders (a labelled and an unlabelled stream of other batch sizes, their own
    epochs): resumed from a checkpoint in the middle, every later step sees the same samples of
    both streams and the run ends with the same parameters as one that never stopped."""
    script = str(ROOT / "tests" / "scripts" / "zipped_fit.py")
    args = ["max_steps=30", "save_every=10", "keep_checkpoints=5", "log_every=5", "tensorboard=false", "num_workers=2"]

    def run(out, *extra):
        subprocess.run([sys.executable, script, str(fashion_shards), f"output_dir={out}", *args, *extra], check=True,
                       env=ENV, capture_output=True, cwd=ROOT)

    def steps(out) -> dict:  # the last record of each step: a resumed run redoes the steps after its checkpoint
        return {round(r["progress"] * 30): r for r in map(json.loads, (out / "keys.jsonl").read_text().splitlines())}

    ref, cut = tmp_path / "ref", tmp_path / "cut"
    run(ref)
    run(cut)
    for late in ("step_0000020", "step_0000030"):  # as if it had died after step 10's checkpoint
        shutil.rmtree(cut / "checkpoints" / late)
    run(cut, "resume=true")
    a, b = steps(ref), steps(cut)
    assert len(a) == 30 and a == b
    # 4 labelled images a step, never twice within the 400-image epoch; 8 unlabelled ones a step go
    # through the 100 test images (12 batches an epoch) twice and a half, so the cut at step 10 falls
    # mid-epoch for one stream and the run crosses epochs of the other.
    assert len({k for r in a.values() for k in r["labelled"]}) == 120
    assert len({k for r in a.values() for k in r["unlabelled"]}) == 100
    first, last = (load_file(str(d / "checkpoints" / "step_0000030" / "model.safetensors")) for d in (ref, cut))
    for k in first:
        torch.testing.assert_close(last[k], first[k], rtol=0, atol=0, msg=k)
    stats = [json.loads(ln) for ln in (cut / "metrics.jsonl").read_text().splitlines() if '"end"' in ln][-1]
    assert stats["data/labelled/samples"] > 0 and stats["data/unlabelled/samples"] > 0
