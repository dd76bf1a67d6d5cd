#!/usr/bin/env python
"""The image SSL results table: every method, the same backbone and budget, on Fashion-MNIST.

    python benchmarks/image_ssl_table.py [--steps 600] [--methods simclr,byol] [--out runs/image_ssl_table]

Builds the shards if needed (tools/build_fashion_mnist.py: 1,000 train images per class, the full
10,000-image official test split). Pretrains each method with its recipe and
`recipes/configs/<method>_demo.yaml` (mmssl.recipe_image.RESNET_32PX, a three-stage ResNet, at 32
px, batch 256, --steps steps, AdamW, one CPU process), then reports kNN (k=20) and linear-probe
top-1 on the test split, with the 10k training images as the bank and the probe's training set,
and the RankMe effective rank of the test features (mmssl.collapse.effective_rank; dimensional
collapse shows as a low rank). Baselines in the same run: the same backbone randomly initialised
(and MAE's ViT randomly initialised), and raw pixels. The random-init ResNet is also evaluated at
seeds 1 to 3 (--random-seeds 4), and the table gives the range over the four: how much random
initialisation alone moves the probes. The margins stay against seed 0.

Writes OUT/table.md, OUT/results.json and OUT/table.png. A method whose results are already in
OUT/results.json with the same steps is not trained again (--force retrains).

`--widths` and `--image-size` change the ResNet for every method and baseline (MAE takes the image
size only). Three widths give three stages, four give four; the stem gets half the first width.
`--widths 64,128,256,512` is the four-stage ResNet the table used before: at 32 px its last stage
sees a 1x1 map (see --stages below). `--image-size 64 --widths 32,64,128,256` gives that stage a
2x2 map, and halving the widths keeps the work per step about the same. DINO's and SwAV's local
crops and jigsaw's tiles stay half the input, as in the demo configs. OUT remembers the setup it
was made with and refuses another.

    python benchmarks/image_ssl_table.py --stages 2,3 [--methods byol,moco] [--out runs/image_ssl_table]

trains nothing: it probes the encoders the table saved (OUT/<method>/encoder) and the random-init
ResNet at each given stage of the ResNet (mmssl.eval.backbone_model; the last stage's average
equals the pooled features of the table), and writes OUT/stages.md and OUT/stages.json. MAE's ViT
has no stages and is left out; a method with no saved encoder is named and skipped.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mmssl.eval.backbone_model import BackboneEval  # noqa: E402
from mmssl.eval.tasks import run_tasks  # noqa: E402
from mmssl.models.encoders import build_encoder  # noqa: E402
from mmssl.models.vit import ViT  # noqa: E402
from mmssl.recipe_image import RESNET_32PX, image_objectives  # noqa: E402

METHODS = list(image_objectives())
DATA = "shards/fashion_mnist"
SIZE = 32  # the default input size; --image-size changes it
WIDTHS = RESNET_32PX["config"]["hidden_sizes"]
FOUR_STAGE_WIDTHS = [64, 128, 256, 512]  # what tables made before the setup was recorded used
SEEDS_KEY = "random-init ResNet, seeds 1+"  # results.json: seed -> probe figures; seed 0 is the "random-init ResNet" row


class Pixels(torch.nn.Module):
    """Raw pixels as features: the eval-transformed image, flattened."""

    def forward(self, images):
        return images.flatten(1)


def resnet_spec(widths: list[int]) -> dict:
    """The demos' ResNet with one block per stage at these widths (and a stem of half the first)."""
    return {**RESNET_32PX, "config": {**RESNET_32PX["config"], "hidden_sizes": widths, "depths": [1] * len(widths),
                                       "embedding_size": widths[0] // 2}}


def evaluate(backbone, size: int, stage: int | None = None, data: str = DATA) -> dict:
    torch.manual_seed(0)
    return run_tasks(BackboneEval(backbone.eval(), stage), ["knn", "linear"], data, "test", size, batch_size=256, workers=2)


def probe_stages(out: Path, stages: list[int], methods: list[str], size: int, widths: list[int]) -> int:
    """kNN / linear at each stage for the random-init ResNet and each saved encoder in OUT."""
    torch.manual_seed(0)
    models = {"random-init ResNet": build_encoder(resnet_spec(widths))}
    for m in methods:
        if m == "mae":
            print("mae: skipped (its ViT has no stages)")
        elif not (out / m / "encoder").is_dir():
            print(f"{m}: skipped (no {out / m / 'encoder'}; train it first: --methods {m})")
        else:
            models[m] = build_encoder({"name": str(out / m / "encoder"), "freeze": True})
    results = {name: {} for name in models}
    for name, model in models.items():
        for stage in stages:
            metrics = evaluate(model, size, stage)
            results[name][str(stage)] = {"knn_top1": metrics["knn_top1@20"], "linear_top1": metrics["linear_top1"],
                                         "linear_train_top1": metrics["linear_train_top1"],
                                         "feature_rank": metrics["feature_rank"]}
            print(f"{name:26s} stage {stage}  kNN {100 * metrics['knn_top1@20']:5.1f}  "
                  f"linear {100 * metrics['linear_top1']:5.1f}", flush=True)
    (out / "stages.json").write_text(json.dumps(results, indent=1))
    ref = results["random-init ResNet"]
    head = " | ".join(f"stage {s}: kNN / linear (vs random)" for s in stages)
    lines = [f"Fashion-MNIST test split, kNN (k=20) and linear top-1 on each ResNet stage's averaged output; encoders "
             f"from {out}.", "", f"| method | {head} |", "|---|" + "---|" * len(stages)]
    for name, by_stage in results.items():
        cells = []
        for s in map(str, stages):
            r, b = by_stage[s], ref[s]
            delta = "" if name == "random-init ResNet" else (f" ({100 * (r['knn_top1'] - b['knn_top1']):+.1f} / "
                                                             f"{100 * (r['linear_top1'] - b['linear_top1']):+.1f})")
            cells.append(f"{100 * r['knn_top1']:.1f} / {100 * r['linear_top1']:.1f}{delta}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    (out / "stages.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def train(method: str, steps: int, out: Path, recipe: str | None = None, overrides=(), config: str | None = None) -> dict:
    """Run recipes/<recipe or method>.py with its demo config (or recipes/configs/<config>.yaml) for
    `steps` steps into OUT/<method>; -> the final kNN / linear figures (and the whole final eval
    record), the loss (and the pretext accuracy, where the method logs one) at the first and last
    log, the minutes it took."""
    run = out / method
    script = recipe or "image_ssl"  # the image methods share one driver; their demo configs name them
    config = config or f"{recipe or method}_demo"
    # overwrite: the table decided to (re)train this row (--force, or other steps), in its own folder
    cmd = [sys.executable, str(ROOT / "recipes" / f"{script}.py"), "--config", str(ROOT / "recipes/configs" / f"{config}.yaml"),
           f"output_dir={run}", f"max_steps={steps}", "tensorboard=false", "save_every=0", "overwrite=true", *overrides]
    started = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    records = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    train_logs = [r for r in records if "loss" in r]
    final_eval = [r for r in records if r.get("event") == "eval"][-1]
    return {"knn_top1": final_eval.get("knn_top1@20"), "linear_top1": final_eval.get("linear_top1"),
            "feature_rank": final_eval.get("feature_rank"), "eval": final_eval,
            "first_loss": train_logs[0]["loss"], "last_loss": train_logs[-1]["loss"],
            "last_accuracy": train_logs[-1].get("accuracy"),
            "embed_std": train_logs[-1].get("embed_std"), "minutes": (time.time() - started) / 60, "steps": steps}


def plot(results: dict, path: Path, title: str = "Fashion-MNIST, frozen features after the same CPU budget") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, ax = plt.subplots(figsize=(max(8, 0.7 * len(names)), 4))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], [100 * results[n]["knn_top1"] for n in names], 0.4, label="kNN top-1")
    ax.bar([x + 0.2 for x in xs], [100 * results[n]["linear_top1"] for n in names], 0.4, label="linear top-1")
    ax.set_xticks(list(xs), names, rotation=45, ha="right")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def probe(model, size: int, data: str = DATA) -> dict:
    """kNN / linear top-1 and feature rank of a model that was not trained here (a baseline)."""
    metrics = evaluate(model, size, data=data)
    return {"knn_top1": metrics["knn_top1@20"], "linear_top1": metrics["linear_top1"], "feature_rank": metrics["feature_rank"]}


def span(records: list[dict], key: str) -> str:
    """'77.5-78.4': the lowest and highest of records[*][key], in percent."""
    values = [100 * r[key] for r in records]
    return f"{min(values):.1f}-{max(values):.1f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--out", type=Path, default=Path("runs/image_ssl_table"))
    p.add_argument("--force", action="store_true")
    p.add_argument("--image-size", type=int, default=SIZE, help="input size in pixels for training and probing")
    p.add_argument("--widths", default=",".join(map(str, WIDTHS)), help="the ResNet's stage widths, three or four of them")
    p.add_argument("--random-seeds", type=int, default=4,
                   help="evaluate the random-init ResNet at seeds 0 to N-1 and report their range (the margins stay "
                        "against seed 0)")
    p.add_argument("--stages", default="", help="comma-separated ResNet stages (0 = stem) to probe the saved encoders at; "
                                                "trains nothing")
    args = p.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        p.error(f"unknown method '{unknown[0]}' (choose from {', '.join(METHODS)})")
    try:
        stages = [int(x) for x in args.stages.split(",") if x.strip()]
    except ValueError:
        p.error(f"--stages takes comma-separated integers, got '{args.stages}'")
    try:
        widths = [int(x) for x in args.widths.split(",")]
    except ValueError:
        widths = []
    if len(widths) not in (3, 4) or min(widths) < 2:
        p.error(f"--widths takes 3 or 4 comma-separated widths of 2 or more, got '{args.widths}'")
    bad = [x for x in stages if not 0 <= x <= len(widths)]
    if bad:
        p.error(f"stage {bad[0]} does not exist (the ResNet has stages 0 to {len(widths)})")
    if args.random_seeds < 1:
        p.error(f"--random-seeds must be 1 or more, got {args.random_seeds}")
    if args.image_size < 16:
        p.error(f"--image-size must be at least 16 px, got {args.image_size}")
    setup = {"image_size": args.image_size, "widths": widths}
    subprocess.run([sys.executable, str(ROOT / "tools/build_fashion_mnist.py"), "--out", DATA], check=True)
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    # A table made before the setup was recorded used 32 px and the four-stage ResNet.
    made_with = results.get("setup", {"image_size": SIZE, "widths": FOUR_STAGE_WIDTHS}) if results else setup
    if made_with != setup:
        p.error(f"{args.out} holds a table made with image size {made_with['image_size']} and widths "
                f"{made_with['widths']}; give another --out for image size {args.image_size} and widths {widths}")
    results["setup"] = setup
    if stages:
        return probe_stages(args.out, stages, methods, args.image_size, widths)
    overrides = [] if setup == {"image_size": SIZE, "widths": WIDTHS} else [
        f"image_size={args.image_size}", f"backbone.config.hidden_sizes=[{','.join(map(str, widths))}]",
        f"backbone.config.depths=[{','.join(['1'] * len(widths))}]",
        f"backbone.config.embedding_size={widths[0] // 2}"]
    # Sizes the demo configs give as half the 32-px input stay half of the new one.
    local = [f"augment.local_size={args.image_size // 2}"]
    per_method = {"mae": overrides[:1] + [f"backbone.config.image_size={args.image_size}"], "dino": overrides + local,
                  "swav": overrides + local, "jigsaw": overrides + [f"jigsaw.tile_size={args.image_size // 2}"]} \
        if overrides else {}
    torch.manual_seed(0)
    baselines = {"raw pixels": Pixels(), "random-init ResNet": build_encoder(resnet_spec(widths))}
    if "mae" in methods or "mae" in results:  # its ViT baseline is slow at larger sizes; only MAE's row needs it
        baselines["random-init ViT (MAE's)"] = ViT(image_size=args.image_size, patch_size=4, dim=192, depth=6, heads=3)
    for name, model in baselines.items():
        if name not in results or args.force:
            results[name] = probe(model, args.image_size)
            results_path.write_text(json.dumps(results, indent=1))
        print(f"{name:26s} kNN {100 * results[name]['knn_top1']:5.1f}  linear {100 * results[name]['linear_top1']:5.1f}")
    # How far random init alone moves the probes: a margin smaller than this spread is not a clear win.
    spread = results.setdefault(SEEDS_KEY, {})
    for seed in range(1, args.random_seeds):
        if str(seed) not in spread or args.force:
            torch.manual_seed(seed)
            spread[str(seed)] = probe(build_encoder(resnet_spec(widths)), args.image_size)
            results_path.write_text(json.dumps(results, indent=1))
    seeds = [results["random-init ResNet"]] + [spread[str(k)] for k in range(1, args.random_seeds)]
    if len(seeds) > 1:
        print(f"random-init ResNet over seeds 0-{len(seeds) - 1}: kNN {span(seeds, 'knn_top1')}, "
              f"linear {span(seeds, 'linear_top1')}")
    for m in methods:
        if m in results and results[m].get("steps") == args.steps and not args.force:
            continue
        print(f"training {m} for {args.steps} steps ...", flush=True)
        # MAE's ViT has no ResNet widths or local crops; it takes the image size only.
        results[m] = train(m, args.steps, args.out, overrides=per_method.get(m, overrides))
        results_path.write_text(json.dumps(results, indent=1))
        r = results[m]
        print(f"{m:26s} kNN {100 * r['knn_top1']:5.1f}  linear {100 * r['linear_top1']:5.1f}  "
              f"loss {r['first_loss']:.3f} -> {r['last_loss']:.3f}  {r['minutes']:.1f} min", flush=True)
    ref = results["random-init ResNet"]
    lines = [f"Fashion-MNIST test split (10,000 images), frozen features; pretraining: {args.steps} steps of batch 256 "
             f"on 10,000 training images (about {args.steps * 256 / 10_000:.0f} epochs), one CPU process, "
             f"{args.image_size} px, ResNet widths {','.join(map(str, widths))}.", "",
             "| method | kNN top-1 (k=20) | linear top-1 | vs random init (kNN / linear) | feature rank | loss first → last "
             "| embed std | minutes |",
             "|---|---|---|---|---|---|---|---|"]
    for name in list(baselines) + [m for m in METHODS if m in results]:
        r = results[name]
        base = results["random-init ViT (MAE's)"] if name == "mae" else ref
        delta = ("" if name in baselines else
                 f"{100 * (r['knn_top1'] - base['knn_top1']):+.1f} / {100 * (r['linear_top1'] - base['linear_top1']):+.1f}")
        loss = f"{r['first_loss']:.3f} → {r['last_loss']:.3f}" if "first_loss" in r else ""
        std = f"{r['embed_std']:.2f}" if r.get("embed_std") is not None else ""
        mins = f"{r['minutes']:.1f}" if "minutes" in r else ""
        rank = f"{r['feature_rank']:.1f}" if r.get("feature_rank") is not None else ""
        lines.append(f"| {name} | {100 * r['knn_top1']:.1f}% | {100 * r['linear_top1']:.1f}% | {delta} | {rank} | {loss} | {std} "
                     f"| {mins} |")
        if name == "random-init ResNet" and len(seeds) > 1:
            lines.append(f"| random-init ResNet, seeds 0-{len(seeds) - 1} (range) | {span(seeds, 'knn_top1')}% "
                         f"| {span(seeds, 'linear_top1')}% |  |  |  |  |  |")
    table = "\n".join(lines)
    (args.out / "table.md").write_text(table + "\n")
    plot({n: results[n] for n in list(baselines) + [m for m in METHODS if m in results]}, args.out / "table.png")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
