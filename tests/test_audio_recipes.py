"""The audio and audio-visual recipes end to end on real data: 2 gloo processes each, retrieval and
probe evaluation, saved encoders that load back, and bad clips skipped and counted."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from conftest import ROOT, STAMPS
from test_distributed import accelerate_2proc

FAST = ["max_steps=2", "batch_size=4", "save_every=2", "log_every=1", "num_workers=1", "tensorboard=false"]


def records(run):
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    return lines, [r for r in lines if r.get("event") == "eval"][-1]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["avol"])  # L3 trains in one process in tests/test_sync_free.py
def test_avc_recipe_with_two_processes(mode, av_shards, speech_shards, tmp_path):
    run = tmp_path / mode
    accelerate_2proc(str(ROOT / "recipes/avc.py"), "--config", str(ROOT / "recipes/configs/avc_demo.yaml"),
                     f"output_dir={run}", f"data.train={av_shards}", f"data.val={av_shards}", f"avc.mode={mode}",
                     f"probe.data={speech_shards / 'speech_speakers'}", "image_size=32", "avc.hard_negatives=0.5", *FAST)
    assert (run / "checkpoints" / "step_0000002" / "data_rank1.json").exists()
    lines, final = records(run)
    assert sum("loss" in r for r in lines) == 2
    # Every held-out pair the field yields is scored (a clip whose sound is skipped, as silent or
    # short, is not), and the probe covers every held-out utterance.
    from mmssl.data import AudioField
    from mmssl.data.shards import resolve_source
    from mmssl.eval.av_tasks import held_out_pairs

    held = len(held_out_pairs(str(av_shards), "test", 32, AudioField(16000, 1.0, train=False, n_mels=64))[0])
    assert final["av_pairs"] == held and final["av_chance_R@1"] == pytest.approx(1 / held)
    assert {"visual_to_audio_R@5", "audio_to_visual_R@10"} <= set(final)
    assert final["audio_eval_samples"] == resolve_source(str(speech_shards / "speech_speakers"), "val").total
    if mode == "avol":  # 3 pointing trials per held-out clip on 2x2 grids, and their pictures
        assert final["pointing_trials"] == 3 * held and final["pointing_chance"] == 0.25
        from PIL import Image

        assert Image.open(run / "localisation" / "step_0000002.png").size == (8 * (2 * 32 + 4), 2 * 32)
    from mmssl.models.encoders import build_encoder

    assert build_encoder({"name": str(run / "encoder" / "audio"), "modality": "audio"}).out_dim == 256
    from transformers import AutoModel

    assert type(AutoModel.from_pretrained(str(run / "encoder" / "visual"))).__name__ == "ResNetModel"


@pytest.mark.slow
def test_cpc_recipe_on_speech_with_two_processes(speech_shards, tmp_path):
    run = tmp_path / "cpc"
    accelerate_2proc(str(ROOT / "recipes/cpc.py"), "--config", str(ROOT / "recipes/configs/cpc_demo.yaml"),
                     f"output_dir={run}", f"data.train={speech_shards / 'speech_speakers'}",
                     f"probes=[{{name: speaker, data: {speech_shards / 'speech_speakers'}, split: val, train_split: train}},"
                     f" {{name: digit, data: {speech_shards / 'speech_digits'}, split: val, train_split: train}}]",
                     "encoder.config.dim=32", "cpc.context_dim=16", *FAST)
    lines, final = records(run)
    assert sum("loss" in r for r in lines) == 2
    from mmssl.data.shards import resolve_source

    for task in ("speaker", "digit"):  # every held-out utterance probed; accuracies count over them
        n = resolve_source(str(speech_shards / f"speech_{task}s"), "val").total
        assert final[f"{task}_eval_samples"] == n
        assert all(abs(n * final[f"{task}_{k}"] - round(n * final[f"{task}_{k}"])) < 1e-3
                   for k in ("linear_top1", "knn_top1@20"))
    from mmssl.models.encoders import build_encoder

    assert build_encoder({"name": str(run / "encoder"), "modality": "audio"}).out_dim == 32
    # The waveform encoder fine-tunes on the digits' labels, scored on every held-out utterance.
    from test_finetune import eval_cli

    digits = speech_shards / "speech_digits"
    proc = eval_cli(run, "--task", "finetune", "--data", digits, "max_steps=2", "batch_size=8", "num_workers=0")
    tuned = json.loads(proc.stdout.strip().splitlines()[-1])
    assert tuned["finetune_eval_samples"] == resolve_source(str(digits), "val").total and tuned["classes"] == 10


@pytest.mark.slow
def test_cpc_recipe_on_video_with_two_processes(motion_shards, tmp_path):
    run = tmp_path / "cpc_video"
    accelerate_2proc(str(ROOT / "recipes/cpc.py"), "--config", str(ROOT / "recipes/configs/cpc_video_demo.yaml"),
                     f"output_dir={run}", f"data.train={motion_shards}", "video.image_size=32", "video.num_frames=8",
                     f"probes=[{{name: motion, data: {motion_shards}, split: test, train_split: train}}]", *FAST)
    lines, final = records(run)
    from mmssl.data.shards import resolve_source

    assert sum("loss" in r for r in lines) == 2
    assert final["motion_eval_samples"] == resolve_source(str(motion_shards), "test").total


def mp4_with_sound(path, wave):
    sys.path.insert(0, str(ROOT / "tools"))
    from motion_clips import render_frames, write_clip

    frames = render_frames(sorted((STAMPS / "animals").rglob("*.png"))[0], "zoom_in", 32, 8)
    write_clip(path, frames, 8, wave, 16000)
    return path.read_bytes()


@pytest.mark.slow
def test_bad_av_clips_are_skipped_and_counted_by_the_recipe(av_shards, motion_shards, tmp_path):
    """A silent track, a 20-ms track, a video without a track and a corrupt file, next to real clips."""
    bad = {"silent": mp4_with_sound(tmp_path / "s.mp4", np.zeros(16000, np.float32)),
           "tooshort": mp4_with_sound(tmp_path / "t.mp4", np.random.default_rng(0).normal(0, 0.3, 320).astype(np.float32))}
    with tarfile.open(next(motion_shards.glob("train-*.tar"))) as tar:
        bad["notrack"] = tar.extractfile(next(m for m in tar.getmembers() if m.name.endswith(".mp4"))).read()
    bad["corrupt"] = b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000)
    shard = tmp_path / "mixed-000000.tar"
    with tarfile.open(shard, "w") as out:
        for key, data in bad.items():
            info = tarfile.TarInfo(f"{key}.mp4")
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
        with tarfile.open(next(av_shards.glob("train-*.tar"))) as good:
            for m in good.getmembers()[:24]:  # 8 whole samples: mp4, cls, json each
                out.addfile(m, good.extractfile(m))
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(ROOT / "recipes/avc.py"), "--config", str(ROOT / "recipes/configs/avc_demo.yaml"),
                           f"output_dir={run}", f"data.train={shard}", "data.val=", "probe.data=", "max_steps=3",
                           "batch_size=4", "num_workers=0", "save_every=0", "tensorboard=false", "image_size=32"],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    end = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()][-1]
    # 3 steps of 4 run past the first epoch (8 good clips): every bad clip was decoded at least once.
    for reason in ("silent_audio", "short_audio", "no_audio_track"):
        assert end.get(f"data/{reason}", 0) >= 1, end
    assert end.get("data/corrupt_audio", 0) + end.get("data/corrupt_video", 0) >= 1, end
