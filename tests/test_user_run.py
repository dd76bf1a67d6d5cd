"""The user's run, end to end, on data the project never made for itself: every mistake caught
before training, evaluation that follows the data, nothing lost in the run folder, checkpoints
that are checked, clean stops on SIGTERM, and retrieval figures that cannot flatter."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, make_shards, recipe_defaults
from mmssl.config import ConfigError, from_cli, keys_of

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
TINY_CLIP = ["image_size=32", "batch_size=4", "num_workers=0", "log_every=1", "tensorboard=false", "warmup_steps=1",
             "max_steps=3", "save_every=3"]


def run(script: str, *args: str, cwd=ROOT, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(ROOT / "recipes" / script), *args], capture_output=True, text=True,
                          env=ENV, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return proc


def records(run_dir: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def unlabelled_captions(stamp_tree, tmp_path_factory) -> Path:
    """The user's own captions corpus: image paths and captions, no labels, make_shards' defaults
    (so a val split of 10%), two captions for every image and three for some (COCO style)."""
    table = tmp_path_factory.mktemp("user") / "captions.csv"
    with open(table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "caption"])
        for n, png in enumerate(sorted(p for p in stamp_tree.rglob("*.png") if p.name != "broken.png")):
            first = png.with_suffix(".txt").read_text().splitlines()[0] if png.with_suffix(".txt").exists() else ""
            rel = os.path.relpath(png, table.parent)  # an absolute path's temporary folder would move the val split
            w.writerow([rel, first or png.stem.replace("_", " ")])
            w.writerow([rel, f"a picture of {png.stem.replace('_', ' ')}"])
            if n % 3 == 0:
                w.writerow([rel, f"{png.parent.name}: {png.stem.replace('_', ' ')}"])
    out = table.parent / "shards"
    make_shards("captions", table, out)
    return out


# ---- 1. every mistake before the first step ----------------------------------------------------
@pytest.mark.parametrize("script, override, message", [
    ("image_ssl.py", "optimizer=adam", "config field 'optimizer' must be one of adamw, lars, sgd; got 'adam'"),
    ("image_ssl.py", "log_every=0", "config field 'log_every' must be >= 1, got 0"),
    ("image_ssl.py", "lr=0", "config field 'lr' must be > 0, got 0.0"),
    ("image_ssl.py", "grad_accum=0", "config field 'grad_accum' must be >= 1, got 0"),
    ("image_ssl.py", "num_workers=-1", "config field 'num_workers' must be >= 0, got -1"),
    ("image_ssl.py", "eval_tasks=[knn, zero-shot]", "config field 'eval_tasks' must be one of knn, linear; got 'zero-shot'"),
    ("image_ssl.py", "objective=clip", "objective 'clip' is not an image SSL method (choose from barlow_twins, byol,"),
    ("avc.py", "avc.mode=l4", "config field 'avc.mode' must be one of l3, avid, avol; got 'l4'"),
    ("temporal_order.py", "temporal_order.fusion=sum", "must be one of difference, concat; got 'sum'"),
    ("clip.py", "loss=triplet", "config field 'loss' must be one of clip, siglip; got 'triplet'"),
    ("cpc.py", "input=text", "config field 'input' must be one of audio, video; got 'text'"),
    ("clip.py", "embed_dim=0", "config field 'embed_dim' must be >= 1, got 0"),
    ("image_ssl.py", "max_steps=0", "config field 'max_steps' must be >= 1, got 0"),
    ("image_ssl.py", "save_every=-1", "config field 'save_every' must be >= 0, got -1"),
    ("videomae.py", "image_size=4", "config field 'image_size' must be >= 8, got 4"),
])
def test_bad_values_are_refused_when_the_config_is_merged(script, override, message):
    with pytest.raises(ConfigError) as info:
        from_cli(recipe_defaults(script, [override]), [override])
    assert message in str(info.value)


def test_a_mistake_is_one_line_exit_2_and_touches_nothing(tmp_path, fashion_shards):
    out = tmp_path / "run"
    proc = run("image_ssl.py", f"data.train={fashion_shards}", f"data.val={fashion_shards}", f"output_dir={out}",
               "log_every=0", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "image_ssl.py: error: config field 'log_every' must be >= 1, got 0"]
    assert not out.exists()


@pytest.mark.slow
def test_help_lists_every_key_from_the_one_source(tmp_path):
    for script in ("clip.py", "image_ssl.py", "avc.py"):
        proc = run(script, "--help")
        defaults = recipe_defaults(script, [])
        listed = [ln.split()[0] for ln in proc.stdout.splitlines() if ln.startswith("  ")]
        assert listed == list(keys_of(defaults)), script
        assert all(len(ln.split("  ")) > 1 for ln in proc.stdout.splitlines() if ln.startswith("  "))
    launch = subprocess.run([str(Path(sys.executable).parent / "accelerate"), "launch", "--num_processes", "1",
                             "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                             str(ROOT / "recipes" / "clip.py"), "--help"], capture_output=True, text=True, env=ENV)
    assert launch.returncode == 0 and "data.train" in launch.stdout and "eval_tasks" in launch.stdout


def test_no_argument_on_a_fresh_clone_names_the_command_that_makes_the_data(tmp_path):
    proc = run("clip.py", cwd=tmp_path, check=False)  # no shards/ here: a fresh clone before `make demo`
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "data.train: data path not found: shards/default_images" in lines[0] and "make demo" in lines[0]
    assert not (tmp_path / "runs").exists()


# ---- evaluation that follows the data -----------------------------------------------------------
def test_clip_on_an_unlabelled_captions_corpus_evaluates_retrieval_and_saves(unlabelled_captions, tmp_path):
    out = tmp_path / "clip"
    # Only data.train is given: the evaluation follows it to its held-out split, not the demo folder.
    proc = run("clip.py", "--config", str(ROOT / "recipes/configs/clip_demo.yaml"), f"data.train={unlabelled_captions}",
               f"output_dir={out}", *TINY_CLIP)
    assert "data.val follows data.train: evaluating on its 'val' split" in proc.stdout
    assert "has no label names (a manifest 'labels' list): skipping zero-shot; evaluating retrieval" in proc.stdout
    final = [r for r in records(out) if r.get("event") == "eval"][-1]
    assert "image_to_text_R@1" in final and "zero_shot_top1" not in final
    # COCO protocol: fewer images than captions, each caption scored against its own image.
    assert final["retrieval_images"] < final["retrieval_texts"] == final["eval_samples"]
    assert (out / "encoder" / "heads.safetensors").exists() and (out / "encoder" / "text").is_dir()
    ev = subprocess.run([sys.executable, "-m", "mmssl.eval", str(out), "--task", "knn", "--data",
                         str(unlabelled_captions)], capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert ev.returncode == 2 and ev.stderr.strip().splitlines() == [
        f"python -m mmssl.eval: error: --task knn needs labels, and {unlabelled_captions} has none; "
        "on unlabelled captions use --task retrieval"]
    ev = subprocess.run([sys.executable, "-m", "mmssl.eval", str(out), "--task", "finetune", "--data",
                         str(unlabelled_captions)], capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert ev.returncode == 2 and ev.stderr.strip().splitlines() == [
        f"python -m mmssl.eval: error: --task finetune needs labels, and {unlabelled_captions}:train has none "
        "(no cls members)"]
    # Asked for explicitly, zero-shot on data without label names is an error before training.
    again = run("clip.py", "--config", str(ROOT / "recipes/configs/clip_demo.yaml"),
                f"data.train={unlabelled_captions}", f"data.val={unlabelled_captions}", f"output_dir={tmp_path / 'z'}",
                "eval_tasks=[zero-shot]", *TINY_CLIP, check=False)
    assert again.returncode == 2 and "eval_tasks asks for zero-shot" in again.stderr
    assert not (tmp_path / "z").exists()


def test_an_image_recipe_on_the_users_folder_with_default_splits(stamp_tree, tmp_path):
    """make_shards with its defaults (train + val), then a recipe with its defaults: no `test` split
    is assumed anywhere; the demo config's Fashion-MNIST `test` split is refused before training."""
    shards = tmp_path / "mine"
    make_shards("images", stamp_tree, shards)
    out = tmp_path / "simclr"
    run("image_ssl.py", f"data.train={shards}", f"output_dir={out}", "max_steps=2",
        "batch_size=8", "num_workers=0", "tensorboard=false", "simclr.hidden_dim=64")
    final = [r for r in records(out) if r.get("event") == "eval"][-1]
    assert {"knn_top1@20", "linear_top1"} <= set(final) and (out / "encoder" / "config.json").exists()
    proc = run("image_ssl.py", "--config", str(ROOT / "recipes/configs/simclr_demo.yaml"), f"data.train={shards}",
               f"data.val={shards}", f"output_dir={tmp_path / 'demo'}", check=False)
    assert proc.returncode == 2 and "has no 'test' split (it has: train, val)" in proc.stderr
    assert not (tmp_path / "demo").exists()


def test_probes_that_point_at_a_missing_folder_stop_before_training(tmp_path, av_shards):
    proc = run("avc.py", "--config", str(ROOT / "recipes/configs/avc_demo.yaml"), f"data.train={av_shards}",
               f"data.val={av_shards}", f"probe.data={tmp_path / 'nowhere'}", f"output_dir={tmp_path / 'r'}", check=False)
    assert proc.returncode == 2 and "probe.data: data path not found" in proc.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_an_evaluation_that_fails_is_logged_and_the_run_still_saves(unlabelled_captions, tmp_path):
    """Evaluation fails during training (its data vanished): logged as failed, training, checkpoints
    and the final encoder are kept."""
    val = tmp_path / "val_copy"
    subprocess.run(["cp", "-r", str(unlabelled_captions), str(val)], check=True)
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(ROOT / "recipes" / "clip.py"), "--config",
                             str(ROOT / "recipes/configs/clip_demo.yaml"), f"data.train={unlabelled_captions}",
                             f"data.val={val}", f"output_dir={out}", *TINY_CLIP, "max_steps=6", "save_every=2"],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (out / "checkpoints").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    for tar in val.glob("*.tar"):
        tar.unlink()  # the evaluation set disappears mid-run
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-2000:]
    failed = [r for r in records(out) if r.get("event") == "eval" and "failed" in r]
    assert failed and "eval at step 6 failed" in stdout
    assert (out / "encoder" / "heads.safetensors").exists() and (out / "checkpoints" / "step_0000006").exists()


# ---- 2. nothing lost in the run folder -----------------------------------------------------------
@pytest.mark.slow
def test_a_run_folder_is_never_overwritten_unasked(caption_shards, tmp_path):
    out = tmp_path / "run"
    args = ["--config", str(ROOT / "recipes/configs/clip_demo.yaml"), f"data.train={caption_shards}", "data.val=",
            f"output_dir={out}", *TINY_CLIP]
    run("clip.py", *args)
    before = (out / "metrics.jsonl").read_text()
    (out / "my_notes.txt").write_text("mine")
    proc = run("clip.py", *args, check=False)
    assert proc.returncode == 2 and "already holds a run" in proc.stderr and "overwrite=true" in proc.stderr
    assert (out / "metrics.jsonl").read_text() == before
    run("clip.py", *args, "overwrite=true", "max_steps=2", "save_every=2")
    assert (out / "my_notes.txt").read_text() == "mine"  # overwrite removes only what a run writes
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_0000002"]
    assert max(r["step"] for r in records(out)) == 2


@pytest.mark.slow
def test_damaged_checkpoints_are_named_and_skipped(caption_shards, tmp_path):
    out = tmp_path / "run"
    args = ["--config", str(ROOT / "recipes/configs/clip_demo.yaml"), f"data.train={caption_shards}", "data.val=",
            f"output_dir={out}", *TINY_CLIP, "max_steps=4", "save_every=2"]
    run("clip.py", *args)
    newest = out / "checkpoints" / "step_0000004" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:1000])  # a truncated copy
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "loss": 0.')  # a line a kill cut short
    proc = run("clip.py", *args, "resume=true", "max_steps=5", "save_every=5")
    assert "step_0000004 is damaged (model.safetensors has 1000 bytes" in proc.stdout
    assert "resumed from" in proc.stdout and "step_0000002 at step 2" in proc.stdout
    assert [r["step"] for r in records(out) if "loss" in r and "event" not in r] == [1, 2, 3, 4, 5]
    for ckpt in (out / "checkpoints").iterdir():
        (ckpt / "trainer.json").unlink()
    proc = run("clip.py", *args, "resume=true", "max_steps=6", check=False)
    assert proc.returncode == 2 and "no intact checkpoint" in proc.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_sigterm_checkpoints_and_resume_is_bit_identical(caption_shards, tmp_path):
    args = ["--config", str(ROOT / "recipes/configs/clip_demo.yaml"), f"data.train={caption_shards}", "data.val=",
            *TINY_CLIP, "max_steps=10", "save_every=100", "num_workers=2"]
    ref = tmp_path / "ref"
    run("clip.py", *args, f"output_dir={ref}")
    out = tmp_path / "stopped"
    proc = subprocess.Popen([sys.executable, str(ROOT / "recipes" / "clip.py"), *args, f"output_dir={out}"],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (
            (out / "metrics.jsonl").exists() and '"step": 3' in (out / "metrics.jsonl").read_text()):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-2000:]
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("clip.py: stopped: SIGTERM at step ") and "resume=true" in line
    stopped_at = int(line.split("at step ")[1].split(":")[0])
    assert 3 <= stopped_at < 10 and (out / "checkpoints" / f"step_{stopped_at:07d}").exists()
    assert not (out / "encoder").exists()
    run("clip.py", *args, f"output_dir={out}", "resume=true")
    a = load_file(str(ref / "checkpoints" / "step_0000010" / "model.safetensors"))
    b = load_file(str(out / "checkpoints" / "step_0000010" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=0, msg=k)


# ---- 4. retrieval that cannot flatter -----------------------------------------------------------
def brute_force_recall(image, text, groups, k, trials=400, seed=0):
    """Image -> text recall@k by random tie-breaking, the loop way (the reference)."""
    gen = torch.Generator().manual_seed(seed)
    ids = list(dict.fromkeys(groups))
    rows = [groups.index(g) for g in ids]
    sim = torch.nn.functional.normalize(image[rows], dim=1) @ torch.nn.functional.normalize(text, dim=1).t()
    hits = 0.0
    for _ in range(trials):
        for m, g in enumerate(ids):
            noisy = sim[m] + torch.rand(sim.shape[1], generator=gen) * 1e-4  # random order among equal scores
            top = torch.topk(noisy, k).indices.tolist()
            hits += any(groups[j] == g for j in top)
    return hits / (trials * len(ids))


def test_collapsed_embeddings_score_chance_not_perfect_recall():
    from mmssl.eval.retrieval import recall_at_k

    n = 40
    out = recall_at_k(torch.ones(n, 8), torch.ones(n, 8))
    for k in (1, 5, 10):
        assert abs(out[f"image_to_text_R@{k}"] - k / n) < 1e-9 and abs(out[f"text_to_image_R@{k}"] - k / n) < 1e-9
    # Identical captions on different images: the model cannot tell them apart, and scores no better.
    image = torch.eye(n)
    text = torch.eye(n)
    text[1] = text[0]
    out = recall_at_k(image, text)
    # Image 0 ties its caption with image 1's copy (half a hit); image 1 scores every caption 0 (1/n).
    assert abs(out["image_to_text_R@1"] - (n - 2 + 0.5 + 1 / n) / n) < 1e-9
    assert abs(out["text_to_image_R@1"] - (n - 1) / n) < 1e-9  # caption 1 finds image 0, not its own


def test_several_captions_per_image_follow_the_coco_protocol():
    from mmssl.eval.retrieval import recall_at_k

    gen = torch.Generator().manual_seed(1)
    groups = [g for g in range(12) for _ in range(1 + g % 3)]  # 1, 2 or 3 captions per image
    image = torch.randn(len(groups), 6, generator=gen)
    for i, g in enumerate(groups):
        image[i] = image[groups.index(g)]  # each row of an image shows the same image
    text = image + 0.9 * torch.randn(len(groups), 6, generator=gen)
    text[5] = text[4]  # a duplicated caption on another image, and coarse scores: ties happen
    text = text.round(decimals=0)
    out = recall_at_k(image, text, groups=groups)
    assert out["retrieval_images"] == 12 and out["retrieval_texts"] == len(groups)
    for k in (1, 5):
        assert abs(out[f"image_to_text_R@{k}"] - brute_force_recall(image, text, groups, k)) < 0.03
    # Text -> image: each caption against the 12 images, its own image the one hit.
    sim = torch.nn.functional.normalize(image[[groups.index(g) for g in range(12)]], dim=1) @ \
        torch.nn.functional.normalize(text, dim=1).t()
    strict = sum(int((sim[:, i] > sim[g, i]).sum() < 1) for i, g in enumerate(groups)) / len(groups)
    assert out["text_to_image_R@1"] <= strict + 1e-9  # ties never count as wins


def test_resume_without_a_checkpoint_keeps_the_old_run(tmp_path):
    """resume=true on a run that saved no checkpoint would start from step 0 and drop its metrics:
    refused instead, and so are resume and overwrite together."""
    from mmssl.train import check_run_dir

    (tmp_path / "metrics.jsonl").write_text('{"step": 10, "loss": 1.0}\n')
    cfg = {"output_dir": str(tmp_path), "resume": True, "overwrite": False}
    with pytest.raises(ConfigError, match="holds a run but no checkpoint to continue from"):
        check_run_dir(cfg)
    with pytest.raises(ConfigError, match="exclude each other"):
        check_run_dir({**cfg, "overwrite": True})
    check_run_dir({**cfg, "resume": False, "overwrite": True})  # replacing it is what overwrite is for
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 10, "loss": 1.0}\n'
