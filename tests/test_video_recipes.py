"""The video recipes on real clips: VideoMAE's loss falls, temporal order beats chance on held-out
clips, both recipes run with 2 gloo processes
and save in their formats, and bad videos in the stream are skipped and counted."""
from __future__ import annotations

import io
import itertools
import json
import os
import subprocess
import sys
import tarfile

import pytest
import torch

from conftest import ROOT, STAMPS
from test_distributed import accelerate_2proc

from mmssl.data import VideoField, build_loader
from mmssl.objectives.videomae import VideoMAE, load_videomae

TINY = ("videomae.config.hidden_size=32", "videomae.config.num_hidden_layers=1", "videomae.config.num_attention_heads=2",
        "videomae.config.intermediate_size=64", "videomae.config.decoder_hidden_size=16",
        "videomae.config.decoder_num_hidden_layers=1", "videomae.config.decoder_num_attention_heads=2",
        "videomae.config.decoder_intermediate_size=32")


def tiny_videomae_on_motion(norm_pix: bool, width: int = 64) -> VideoMAE:
    cfg = {"hidden_size": width, "num_hidden_layers": 2 if width < 128 else 3, "num_attention_heads": width // 32,
           "intermediate_size": 2 * width, "decoder_hidden_size": width // 2,
           "decoder_num_hidden_layers": 1 if width < 128 else 2, "decoder_num_attention_heads": 2,
           "decoder_intermediate_size": width, "norm_pix_loss": norm_pix, "patch_size": 8}
    return VideoMAE(load_videomae("", cfg, 8, 64), 0.9)


def train_videomae(model, batches, steps, lr):
    """`batches`: a list (cycled) or a loader (read again each epoch, so crops are drawn anew)."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95))
    stream = itertools.cycle(batches) if isinstance(batches, list) else \
        itertools.chain.from_iterable(itertools.repeat(batches))
    for batch in itertools.islice(stream, steps):
        loss = model(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.learning
def test_videomae_falls_below_predicting_zeros_on_held_out_clips(motion_shards_all_photos):
    """The normalised-pixel target's own floor is the loss of predicting zeros (its mean square; 0
    for flat tubelets). On held-out photos' clips with fixed tube masks, the trained model must end
    below it: a loss that merely falls from its start can sit on that floor and mean nothing.
    (On the 24-photo set it memorises its training photos and ends above the floor on new ones.)"""
    data = str(motion_shards_all_photos)
    torch.manual_seed(0)
    train = build_loader(data, [VideoField(8, 2, 64, train=True)], 8, num_workers=0, seed=0)
    held = next(iter(build_loader(data, [VideoField(8, 2, 64, train=False)], 16, split="test",
                                  shuffle=False, drop_last=False, num_workers=0, rank=0, world_size=1)))
    model = tiny_videomae_on_motion(True, width=128)
    torch.manual_seed(1)
    mask = model.mask(held["video"], 0.9)

    def held_out() -> tuple[float, float]:
        with torch.no_grad():
            loss, _, _, _, zero = model.reconstruct(held["video"], mask=mask)
        return float(loss), float(zero)

    first, floor = held_out()
    # Two epochs of clips decoded once and cycled (each with its own random crops and frame offsets):
    # decoding every step would cost as much again as the training.
    epochs = [b for _ in range(2) for b in train]
    train_videomae(model, epochs, 1250, 1e-3)
    last, _ = held_out()
    print(f"videomae held-out loss {first:.4f} -> {last:.4f}, predicting zeros {floor:.4f} ({last / floor:.3f})")
    assert first > floor and last < 0.99 * floor


def test_videomae_raw_pixel_loss_halves_on_real_clips(motion_shards):
    """Raw-pixel targets (the paper's `norm_pix_loss: false` ablation) are far easier: on fixed
    clips and masks the loss must halve."""
    torch.manual_seed(0)
    fixed = list(itertools.islice(build_loader(str(motion_shards), [VideoField(8, 2, 64, train=True)], 8,
                                               num_workers=0, seed=0), 3))
    model = tiny_videomae_on_motion(False)

    def loss_on_fixed_masks() -> float:
        torch.manual_seed(1)  # the same tube masks before and after training
        with torch.no_grad():
            return sum(float(model(b)["loss"]) for b in fixed) / len(fixed)

    first = loss_on_fixed_masks()
    train_videomae(model, fixed, 40, 1e-3)
    last = loss_on_fixed_masks()
    print(f"videomae (raw pixels): loss {first:.4f} -> {last:.4f}")
    assert last < 0.5 * first


@pytest.mark.learning
@pytest.mark.parametrize("task,steps,floor", [("verify", 100, 0.7), ("sort", 150, 0.2)])
def test_temporal_order_learns_on_real_clips(task, steps, floor, motion_shards):
    """Held-out photos' clips: verify accuracy clearly above its chance of 1/2, sort above 1/12."""
    from mmssl.models.encoders import build_encoder
    from mmssl.objectives.order_prediction import OrderPrediction
    from mmssl.objectives.shuffle_and_learn import ShuffleAndLearn
    from mmssl.recipe_image import SMALL_RESNET

    torch.manual_seed(0)
    # 32-px frames: the camera's motion reads as well as at 64 px, at a quarter of the work.
    train = build_loader(str(motion_shards), [VideoField(16, 1, 32, train=True)], 16, num_workers=0, seed=0)
    test = build_loader(str(motion_shards), [VideoField(16, 1, 32, train=False)], 64, split="test", shuffle=False,
                        drop_last=False, num_workers=0, rank=0, world_size=1)
    test_clips = torch.cat([b["video"] for b in test])
    model = {"verify": ShuffleAndLearn, "sort": OrderPrediction}[task](build_encoder(SMALL_RESNET), hidden_dim=256)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    for batch in itertools.islice(itertools.cycle(train), steps):
        loss = model(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():  # 20 draws of tuples from every held-out clip
        acc = sum(float(model({"video": test_clips})["acc"]) for _ in range(20)) / 20
    print(f"temporal order ({task}): held-out accuracy {acc:.3f} on {len(test_clips)} clips")
    assert acc > floor, f"{task} accuracy {acc:.3f} is not clearly above chance"


def run_files(run):
    records = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    return records, [r for r in records if r.get("event") == "eval"][-1]


def two_process_run(recipe: str, motion_shards, run, *overrides):
    """The recipe's demo config on the test motion set, 2 gloo processes, 2 steps, a checkpoint at
    the end; -> (metrics records, the final evaluation)."""
    accelerate_2proc(str(ROOT / f"recipes/{recipe}.py"), "--config", str(ROOT / f"recipes/configs/{recipe}_demo.yaml"),
                     f"output_dir={run}", f"data.train={motion_shards}", f"data.val={motion_shards}", "max_steps=2",
                     "batch_size=4", "save_every=2", "log_every=1", "num_workers=1", "tensorboard=false", *overrides)
    assert (run / "checkpoints" / "step_0000002" / "data_rank1.json").exists()
    return run_files(run)


@pytest.mark.slow
def test_videomae_recipe_with_two_processes_saves_hugging_face_format(motion_shards, tmp_path):
    run = tmp_path / "videomae"
    records, final = two_process_run("videomae", motion_shards, run, "image_size=64", "num_frames=8", "stride=2",
                                     "reconstructions=2", *TINY)
    assert sum("loss" in r for r in records) == 2
    assert all(r["masked_share"] == pytest.approx(14 / 16) for r in records if "loss" in r)  # int(0.9 * 16) of 16
    n_test = sum(1 for _ in (motion_shards).glob("test-*.tar")) and json.loads(
        (motion_shards / "manifest.json").read_text())["splits"]["test"]["count"]
    assert final["eval_samples"] == n_test and {"knn_top1@20", "linear_top1"} <= set(final)
    # The held-out loss is logged beside its predict-zero floor (the normalised targets' mean square).
    assert final["held_out_zero_loss"] > 0.1 and final["held_out_loss"] != final["held_out_zero_loss"]
    from PIL import Image

    sheet = Image.open(run / "reconstructions" / "step_0000002.png")
    assert sheet.size == (8 * 64, 2 * (3 * 64 + 4))  # 2 clips x (original, masked, reconstruction), 8 frames
    # Fine-tuning, the paper's protocol, reads every token of the saved encoder and saves it back.
    from test_finetune import eval_cli
    from transformers import AutoModel

    proc = eval_cli(run, "--task", "finetune", "--data", motion_shards, "--split", "test", "max_steps=2", "batch_size=4",
                    "num_workers=0")
    tuned = json.loads(proc.stdout.strip().splitlines()[-1])
    assert tuned["classes"] == 6 and tuned["finetune_eval_samples"] == n_test and tuned["labelled"] > 6
    assert type(AutoModel.from_pretrained(tuned["finetune_dir"] + "/encoder")).__name__ == "VideoMAEModel"
    from transformers import AutoModel, VideoMAEForPreTraining

    assert type(AutoModel.from_pretrained(str(run / "encoder"))).__name__ == "VideoMAEModel"
    VideoMAEForPreTraining.from_pretrained(str(run / "encoder" / "pretraining"), use_safetensors=True)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["verify", "sort"])
def test_temporal_order_recipe_with_two_processes(task, motion_shards, tmp_path):
    run = tmp_path / task
    records, final = two_process_run("temporal_order", motion_shards, run, "image_size=32", f"temporal_order.task={task}")
    n = json.loads((motion_shards / "manifest.json").read_text())["splits"]["test"]["count"]
    assert sum("acc" in r for r in records) == 2 and final["eval_samples"] == n
    assert all(abs(n * final[k] - round(n * final[k])) < 1e-3 for k in ("knn_top1@20", "linear_top1"))
    from transformers import AutoModel

    assert type(AutoModel.from_pretrained(str(run / "encoder"))).__name__ == "ResNetModel"


def bad_videos_shard(path, good_shard):
    """A shard of bad samples next to real ones: a corrupt mp4, a 1-frame mp4, and a sample with
    no video member at all."""
    sys.path.insert(0, str(ROOT / "tools"))
    from motion_clips import render_frames, write_clip

    one = path.parent / "one_frame.mp4"
    write_clip(one, render_frames(sorted((STAMPS / "animals").rglob("*.png"))[0], "pan_left", 64, 1), 8, None, 16000)
    members = {"corrupt.mp4": b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000), "corrupt.cls": b"0",
               "oneframe.mp4": one.read_bytes(), "oneframe.cls": b"1", "novideo.cls": b"2", "novideo.txt": b"x"}
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        with tarfile.open(good_shard) as good:
            keys = []
            for m in good.getmembers():  # then the first 12 whole samples
                key = m.name.split(".")[0]
                if key not in keys and len(keys) == 12:
                    break
                keys += [key] if key not in keys else []
                tar.addfile(m, good.extractfile(m))


@pytest.mark.slow
def test_bad_videos_are_skipped_and_counted_by_the_recipe(motion_shards, tmp_path):
    shard = tmp_path / "mixed-000000.tar"
    bad_videos_shard(shard, motion_shards / "train-000000.tar")
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(ROOT / "recipes/temporal_order.py"), "--config",
                           str(ROOT / "recipes/configs/temporal_order_demo.yaml"), f"output_dir={run}",
                           f"data.train={shard}", "data.val=", "max_steps=4", "batch_size=4", "num_workers=0",
                           "save_every=0", "tensorboard=false", "image_size=32"],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    end = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert end["event"] == "end"
    # 4 steps of 4 run past the first epoch (12 good clips), so every bad sample was decoded at least once.
    assert all(end.get(f"data/{r}", 0) >= 1 for r in ("corrupt_video", "short_video", "missing_video")), end


def test_flow_of_real_camera_motion_points_the_way_the_scene_moves(motion_shards):
    """Farneback flow on the motion set's held-out clips: a pan moves the scene the other way
    (pan left: +x), a zoom in spreads it from the centre (positive divergence), a zoom out draws it in."""
    from mmssl.data import LabelField
    from mmssl.data.flow import FlowField

    labels = json.loads((motion_shards / "manifest.json").read_text())["labels"]
    loader = build_loader(str(motion_shards), [FlowField(16, 1, 64, train=False), LabelField()], 64, split="test",
                          shuffle=False, drop_last=False, num_workers=0, rank=0, world_size=1)
    batch = next(iter(loader))
    flow = batch["flow"].view(len(batch["label"]), -1, 2, 64, 64)  # [B, pairs, (dx, dy), H, W]
    xs = torch.linspace(-1, 1, 64)
    seen = set()
    for k, name in enumerate(labels):
        f = flow[batch["label"] == k]
        if not len(f):
            continue
        seen.add(name)
        dx, dy = float(f[:, :, 0].mean()), float(f[:, :, 1].mean())
        div = float((f[:, :, 0] * xs).mean() + (f[:, :, 1] * xs.view(64, 1)).mean())
        expected = {"pan_left": dx > 0.3, "pan_right": dx < -0.3, "pan_up": dy > 0.3, "pan_down": dy < -0.3,
                    "zoom_in": div > 0.05, "zoom_out": div < -0.05}[name]
        assert expected, f"{name}: mean flow ({dx:.2f}, {dy:.2f}), divergence {div:.2f}"
    assert len(seen) == 6


@pytest.mark.learning
def test_rgb_flow_frames_find_their_own_flow_on_held_out_clips(motion_shards):
    """After training, a held-out clip's frames pick its own flow among 32 held-out clips well above
    chance (1/32) and above the random initialisation."""
    from mmssl.data.flow import FlowField
    from mmssl.models.encoders import build_encoder
    from mmssl.objectives.rgb_flow import RGBFlow
    from mmssl.recipe_image import SMALL_RESNET

    torch.manual_seed(0)
    train = build_loader(str(motion_shards), [FlowField(16, 1, 32, train=True)], 16, num_workers=0, seed=0)
    held = next(iter(build_loader(str(motion_shards), [FlowField(16, 1, 32, train=False)], 32, split="test",
                                  shuffle=False, drop_last=False, num_workers=0, rank=0, world_size=1)))
    flow_spec = {**SMALL_RESNET, "config": {**SMALL_RESNET["config"], "num_channels": 8}}
    model = RGBFlow(build_encoder(SMALL_RESNET), build_encoder(flow_spec), embed_dim=32, hidden_dim=64)

    def held_out_acc() -> float:
        model.eval()
        with torch.no_grad():
            acc = float(model(held)["acc"])
        model.train()
        return acc

    before = held_out_acc()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for batch in itertools.islice(itertools.chain.from_iterable(itertools.repeat(train)), 150):
        loss = model(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = held_out_acc()
    print(f"rgb-flow held-out matching accuracy {before:.3f} random init -> {after:.3f} (chance {1 / 32:.3f})")
    assert after > 4 / 32 and after > before + 0.05


@pytest.mark.slow
def test_rgb_flow_recipe_with_two_processes(motion_shards, tmp_path):
    run = tmp_path / "rgb_flow"
    records, final = two_process_run("rgb_flow", motion_shards, run, "image_size=32")
    n = json.loads((motion_shards / "manifest.json").read_text())["splits"]["test"]["count"]
    assert sum("loss" in r for r in records) == 2 and final["eval_samples"] == n
    from transformers import AutoModel

    assert type(AutoModel.from_pretrained(str(run / "encoder"))).__name__ == "ResNetModel"
