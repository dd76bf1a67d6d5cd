"""The image SSL recipe end to end with 2 real processes (gloo on CPU, through accelerate):
a few steps on real Fashion-MNIST shards, a checkpoint per rank, kNN and linear-probe evaluation,
and a saved encoder that loads back."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT
from test_distributed import accelerate_2proc

from mmssl.recipe_image import image_objectives

# One method of each kind of cross-process code (gathered negatives, all-reduced statistics, a
# queue, multi-crop), MAE's ViT and the seeds' pretext tasks with a decoder or patch pairs, through
# the real launcher; every method trains and saves in one process through `fit` in
# tests/test_sync_free.py. Each two-process run costs 10 to 30 s.
RECIPES = [m for m in image_objectives() if m in {"barlow_twins", "colourisation", "dino", "inpainting", "mae", "moco",
                                                  "relative_position", "simclr"}]


@pytest.mark.slow
@pytest.mark.parametrize("name", RECIPES)
def test_recipe_runs_with_two_processes_and_saves_an_encoder(name, fashion_shards, tmp_path):
    run = tmp_path / name
    accelerate_2proc(str(ROOT / "recipes" / "image_ssl.py"), "--config", str(ROOT / "recipes/configs" / f"{name}_demo.yaml"),
                     f"output_dir={run}", f"data.train={fashion_shards}", f"data.val={fashion_shards}", "max_steps=2",
                     "batch_size=8", "save_every=2", "log_every=1", "num_workers=1", "tensorboard=false",
                     "eval_split=test")  # the fixture holds out Fashion-MNIST's test split
    assert (run / "checkpoints" / "step_0000002" / "data_rank1.json").exists()
    records = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert sum("loss" in r for r in records) == 2
    final = [r for r in records if r.get("event") == "eval"][-1]
    assert final["eval_samples"] == 100  # the whole test split, 10 per class
    # Accuracies are counts over those 100 samples, not over a batch or a subset.
    assert all(abs(100 * final[k] - round(100 * final[k])) < 1e-4 for k in ("knn_top1@20", "linear_top1"))

    from mmssl.models.encoders import build_encoder

    encoder = build_encoder({"name": str(run / "encoder")})
    import yaml

    saved = yaml.safe_load((run / "config.yaml").read_text())
    # The trained tower, not a default one: its width is the run's config's.
    assert encoder.out_dim == build_encoder(saved["backbone"]).out_dim
    assert final["feature_rank"] <= encoder.out_dim
    if name == "simclr":  # the evaluation CLI takes a backbone-only run as well
        proc = subprocess.run([sys.executable, "-m", "mmssl.eval", str(run), "--task", "knn", "--data", str(fashion_shards),
                               "--split", "test", "--workers", "0"], capture_output=True, text=True, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert json.loads(proc.stdout.strip().splitlines()[-1])["knn_top1@20"] == pytest.approx(final["knn_top1@20"])
        # --stage 3, the demo ResNet's last stage averaged, is the same features; --stage 9 is named as missing
        for stage, expect in (("3", 0), ("9", 2)):
            proc = subprocess.run([sys.executable, "-m", "mmssl.eval", str(run), "--task", "knn", "--data",
                                   str(fashion_shards), "--split", "test", "--workers", "0", "--stage", stage],
                                  capture_output=True, text=True, cwd=ROOT)
            assert proc.returncode == expect, proc.stderr[-2000:]
        assert "stage 9 does not exist: ResNetModel has stages 0 (stem) to 3" in proc.stderr.strip().splitlines()[-1]
        record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
        assert record["stage"] == 3 and record["knn_top1@20"] == pytest.approx(final["knn_top1@20"])
    if name != "mae":  # transformers' ResNet: loads with AutoModel as well
        from transformers import AutoModel

        assert type(AutoModel.from_pretrained(str(run / "encoder"))).__name__ == "ResNetModel"
    else:
        from PIL import Image

        png = run / "reconstructions" / "step_0000002.png"
        assert final["reconstructions"] == str(png)
        assert Image.open(png).size[0] == 3 * Image.open(png).size[1] // 8  # 8 rows of original | masked | recon
