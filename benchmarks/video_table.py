#!/usr/bin/env python
"""The video results table: VideoMAE and temporal-order encoders on the camera-motion set.

    python benchmarks/video_table.py [--steps 200] [--videomae-steps 1000] [--finetune-steps 300] [--out runs/video_table] [--force]

Builds the motion set if needed (tools/build_motion_set.py: 240 real photos x 6 camera motions,
split by photo). Pretrains VideoMAE (90% tube masking) for --videomae-steps steps, Shuffle and
Learn (`verify`), order prediction (`sort`) and RGB-flow correspondence for --steps steps, with
their demo configs on one CPU process, then
reports kNN (k=20) and linear-probe top-1 of the six motion classes on the test photos, with the
train clips as the bank and the probe's training set. Chance is 1/6.

Baselines in the same run: each encoder randomly initialised, under the same clip feature, and a
single-frame image baseline (the middle frame through the random frame encoder): the motion
can only be read from the frame order, so that one should sit near chance.

Fine-tuning, the protocol of the VideoMAE paper: the pretrained VideoMAE encoder and the same
architecture from random initialisation are each trained end to end with a linear head on all
train clips for --finetune-steps steps (`python -m mmssl.eval RUN --task finetune`, batch 32,
its default schedule), and scored top-1 on the test clips, beside their frozen linear probes.

Clip features: VideoMAE averages its tokens over space within each temporal slot and concatenates
the slots in order (`videomae.pool: time`; the all-token mean is a baseline row); the frame
encoders concatenate the features of 4 evenly spaced frames in time order. Writes OUT/table.md,
results.json, table.png and the record benchmarks/results/video_table.json.
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
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "recipes"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from image_ssl_table import plot, train  # noqa: E402
import docs_tables  # noqa: E402
from record import write_record  # noqa: E402

from mmssl.config import from_cli  # noqa: E402
from mmssl.eval.video_tasks import video_probes  # noqa: E402
from mmssl.models.encoders import build_encoder  # noqa: E402
from mmssl.objectives.frame_tuples import ordered_frame_features  # noqa: E402

DATA = "shards/motion"  # relative to where it runs, like a recipe's data paths
# name -> (recipe, overrides)
METHODS = {"videomae": ("videomae", ()), "temporal order (verify)": ("temporal_order", ("temporal_order.task=verify",)),
           "temporal order (sort)": ("temporal_order", ("temporal_order.task=sort",)),
           "RGB-flow correspondence": ("rgb_flow", ())}


def demo_config(recipe: str) -> dict:
    module = __import__(recipe)
    return from_cli(module.DEFAULTS, ["--config", str(ROOT / "recipes/configs" / f"{recipe}_demo.yaml")])


def probe(features, cfg) -> dict:
    torch.manual_seed(0)
    out = video_probes(features, DATA, "test", "train", cfg["num_frames"], cfg["stride"], cfg["image_size"])
    return {"knn_top1": out["knn_top1@20"], "linear_top1": out["linear_top1"]}


def baselines() -> dict:
    """Random-init encoders under the trained encoders' clip features, and the single frame."""
    import videomae

    torch.manual_seed(0)
    vcfg, tcfg = demo_config("videomae"), demo_config("temporal_order")
    frames = build_encoder(tcfg["backbone"]).eval()
    vmae = videomae.objective(vcfg).eval()
    middle = tcfg["num_frames"] // 2

    def vmae_tokens(v):
        return vmae.backbone(v).last_hidden_state.mean(1)

    return {
        "single frame (random-init ResNet)": (lambda v: frames(v[:, middle]), tcfg),
        "random-init ResNet, 4 ordered frames": (lambda v: ordered_frame_features(frames, v, 4), tcfg),
        "random-init VideoMAE, all-token mean": (vmae_tokens, vcfg),
        "random-init VideoMAE": (vmae.video_features, vcfg),
    }


def finetune(run: Path, init: str, steps: int, out: Path) -> dict:
    """Fine-tune the encoder of `run` (init run or random) on all motion train clips; -> the eval record and minutes."""
    cmd = [sys.executable, "-m", "mmssl.eval", str(run), "--task", "finetune", "--data", DATA, "--split", "test",
           "--init", init, f"max_steps={steps}", "batch_size=32", f"output_dir={out}", "overwrite=true"]
    started = time.time()
    done = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "minutes": (time.time() - started) / 60}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=200, help="temporal-order training steps")
    p.add_argument("--videomae-steps", type=int, default=1000, help="VideoMAE training steps (about 1.3 s each)")
    p.add_argument("--finetune-steps", type=int, default=300, help="fine-tuning steps of VideoMAE and its random init")
    p.add_argument("--out", type=Path, default=Path("runs/video_table"))
    p.add_argument("--force", action="store_true")
    args = p.parse_args(argv)
    subprocess.run([sys.executable, str(ROOT / "tools/build_motion_set.py"), "--out", DATA], check=True)
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    base = baselines()
    with torch.no_grad():
        for name, (features, cfg) in base.items():
            if name not in results or args.force:
                results[name] = probe(features, cfg)
                results_path.write_text(json.dumps(results, indent=1))
            r = results[name]
            print(f"{name:38s} kNN {100 * r['knn_top1']:5.1f}  linear {100 * r['linear_top1']:5.1f}", flush=True)
    for name, (recipe, overrides) in METHODS.items():
        steps = args.videomae_steps if recipe == "videomae" else args.steps
        if name in results and results[name].get("steps") == steps and not args.force:
            continue
        print(f"training {name} for {steps} steps ...", flush=True)
        key = name.replace(" ", "_").replace("(", "").replace(")", "")
        results[name] = train(key, steps, args.out, recipe, overrides)
        if recipe == "videomae":  # the held-out loss beside the loss of predicting zeros
            ev = results[name]["eval"]
            results[name]["zero_loss"] = ev.get("held_out_zero_loss")
            results[name]["held_out_loss"] = ev.get("held_out_loss")
        results_path.write_text(json.dumps(results, indent=1))
        r = results[name]
        print(f"{name:38s} kNN {100 * r['knn_top1']:5.1f}  linear {100 * r['linear_top1']:5.1f}  "
              f"loss {r['first_loss']:.3f} -> {r['last_loss']:.3f}  {r['minutes']:.1f} min", flush=True)
    for init in ("random", "run"):
        name = f"VideoMAE fine-tuned ({init})"
        r = results.get(name)
        if r is None or r.get("steps") != args.finetune_steps or args.force or (
                init == "run" and r.get("pretrain_steps") != results["videomae"]["steps"]):
            print(f"fine-tuning VideoMAE ({init} init) for {args.finetune_steps} steps ...", flush=True)
            r = results[name] = finetune(args.out / "videomae", init, args.finetune_steps,
                                         args.out / f"videomae_finetune_{init}")
            r["pretrain_steps"] = results["videomae"]["steps"]
            results_path.write_text(json.dumps(results, indent=1))
        print(f"{name:38s} top-1 {100 * r['finetune_top1']:5.1f}  {r['minutes']:.1f} min", flush=True)
    lines = [f"Camera-motion set ({DATA}): 6 classes, test photos unseen in training, chance 16.7%. Frozen features; "
             f"pretraining: the demo configs (batch 32), one CPU process, for the steps in each row.", "",
             "| encoder | kNN top-1 (k=20) | linear top-1 | loss first → last | minutes |", "|---|---|---|---|---|"]
    names = list(base) + [n for n in METHODS if n in results]
    for name in names:
        r = results[name]
        loss = f"{r['first_loss']:.3f} → {r['last_loss']:.3f}" if "first_loss" in r else ""
        mins = f"{r['minutes']:.1f}" if "minutes" in r else ""
        label = f"{name} ({r['steps']} steps)" if "steps" in r else name
        lines.append(f"| {label} | {100 * r['knn_top1']:.1f}% | {100 * r['linear_top1']:.1f}% | {loss} | {mins} |")
    vm = results.get("videomae", {})
    if vm.get("held_out_loss") is not None:
        lines += ["", f"VideoMAE's held-out loss (test clips, fixed tube masks) after {vm['steps']} steps: "
                  f"{vm['held_out_loss']:.4f}; predicting zeros there scores {vm['zero_loss']:.4f} "
                  f"(ratio {vm['held_out_loss'] / vm['zero_loss']:.3f})."]
    ft = {init: results.get(f"VideoMAE fine-tuned ({init})") for init in ("random", "run")}
    if all(ft.values()):
        steps = ft["run"]["steps"]
        lines += ["", f"VideoMAE fine-tuned end to end with a linear head on all train clips ({steps} steps, batch 32, "
                  "`python -m mmssl.eval RUN --task finetune`), beside its frozen probes; test top-1:", "",
                  "| VideoMAE encoder | kNN (frozen) | linear probe (frozen) | fine-tuned | fine-tune minutes |",
                  "|---|---|---|---|---|"]
        for label, probe_row, init in (("random init", "random-init VideoMAE", "random"),
                                       (f"pretrained {vm.get('steps')} steps", "videomae", "run")):
            p_, f_ = results[probe_row], ft[init]
            lines.append(f"| {label} | {100 * p_['knn_top1']:.1f}% | {100 * p_['linear_top1']:.1f}% | "
                         f"{100 * f_['finetune_top1']:.1f}% | {f_['minutes']:.1f} |")
    table = "\n".join(lines)
    (args.out / "table.md").write_text(table + "\n")
    write_record(ROOT / "benchmarks/results/video_table.json", results=results, table=table)
    docs_tables.main([])  # the docs' block of this record follows it
    plot({n: results[n] for n in names}, args.out / "table.png", "Camera-motion set, frozen clip features")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
