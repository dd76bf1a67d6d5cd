#!/usr/bin/env python
"""When does self-supervision pay? Top-1 on Fashion-MNIST's 10,000 test images with 1%, 10% and 100%
of the 60,000 training labels, one CPU process.

    python benchmarks/label_efficiency.py [--fractions 0.01,0.1,1] [--seeds 0,1,2] [--steps 300]
                                          [--ssl simclr,byol,mae] [--ssl-steps 300] [--rows ...]
                                          [--finetune 'key=value ...'] [--out runs/label_efficiency]
                                          [--record PATH]

Rows (each trained for --steps optimizer steps with the same class-balanced labels per seed,
drawn by mmssl.data.subset; one step is a batch of 64 labelled images for fine-tuning, 32
labelled and 7 x 32 unlabelled ones for the semi-supervised methods):
- supervised from scratch: `python -m mmssl.eval RUN --task finetune --init random`;
- linear probe on frozen SSL features, trained on the labelled share only;
- SSL then fine-tuning: `--task finetune` from each SSL run's encoder;
- Pseudo-Label and FixMatch: `recipes/fixmatch.py` with recipes/configs/fixmatch_demo.yaml, and
  the same recipe with `fixmatch.lambda_u=0`: its supervised part alone, the like-for-like baseline
  (same batch, learning rate, weak view and averaging);
- FixMatch from an SSL init: the same, `init=` the SSL run with the best 1% linear probe, and its
  supervised part alone from that init (`fixmatch_init_supervised`).
The SSL runs are the demo configs at --ssl-steps on the whole train split (no labels). Builds
the shards first if needed (tools/build_fashion_mnist.py --train-per-class 6000: the official
splits). Caches every cell in OUT/results.json (--force recomputes), writes OUT/table.md and the
record benchmarks/results/label_efficiency.json. Below the table: FixMatch's diagnostics (mask_rate,
pseudo_acc, unlabelled_acc) from each semi-supervised run's last log window.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from record import write_record  # noqa: E402

DATA = "shards/fashion_mnist_full"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
ROWS = ("supervised", "linear", "finetune", "fixmatch_supervised", "pseudo_label", "fixmatch", "fixmatch_init",
        "fixmatch_init_supervised")


def run(cmd: list[str]) -> str:
    """Run a user-facing command from the repository root; -> its stdout (fails with its stderr)."""
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return proc.stdout


def ssl_run(out: Path, method: str, steps: int) -> Path:
    folder = out / "ssl" / method
    if not (folder / "encoder").exists():
        run([sys.executable, "recipes/image_ssl.py", "--config", f"recipes/configs/{method}_demo.yaml",
             f"output_dir={folder}", f"data.train={DATA}", f"data.val={DATA}", f"max_steps={steps}", "eval_tasks=[]",
             "save_every=0", "tensorboard=false", "overwrite=true"])
    return folder


def finetune(ssl: Path, fraction: float, seed: int, steps: int, init: str, out: Path, extra: list[str]) -> float:
    folder = out / "finetune" / f"{ssl.name}_{init}_{fraction:g}_seed{seed}"
    stdout = run([sys.executable, "-m", "mmssl.eval", str(ssl), "--task", "finetune", "--data", DATA, "--split", "test",
                  "--label-fraction", str(fraction), "--seed", str(seed), "--init", init, f"max_steps={steps}",
                  f"output_dir={folder}", "overwrite=true", *extra])
    return json.loads(stdout.strip().splitlines()[-1])["finetune_top1"]


# row: (objective, from the SSL init, extra keys)
SEMI = {"fixmatch_supervised": ("fixmatch", False, ("fixmatch.lambda_u=0",)),
        "pseudo_label": ("pseudo_label", False, ()), "fixmatch": ("fixmatch", False, ()),
        "fixmatch_init": ("fixmatch", True, ()), "fixmatch_init_supervised": ("fixmatch", True, ("fixmatch.lambda_u=0",))}


def semi_folder(out: Path, method: str, fraction: float, seed: int, init: bool, extra: tuple[str, ...]) -> Path:
    tag = ("_init" if init else "") + ("_" + "_".join(extra).replace("=", "") if extra else "")
    return out / "semi" / f"{method}{tag}_{fraction:g}_seed{seed}"


def semi(method: str, fraction: float, seed: int, steps: int, out: Path, init: Path | None = None,
         extra: tuple[str, ...] = ()) -> float:
    folder = semi_folder(out, method, fraction, seed, init is not None, extra)
    run([sys.executable, "recipes/fixmatch.py", "--config", "recipes/configs/fixmatch_demo.yaml", f"objective={method}",
         f"output_dir={folder}", f"data.train={DATA}", f"data.val={DATA}", f"labels.fraction={fraction}", f"seed={seed}",
         f"max_steps={steps}", "eval_every=0", "save_every=0", "tensorboard=false", "overwrite=true",
         *([f"init={init}"] if init else []), *extra])
    evals = [json.loads(ln) for ln in (folder / "metrics.jsonl").read_text().splitlines() if '"eval"' in ln]
    return evals[-1]["top1"]


def features(ssl: Path) -> dict:
    """Frozen features of every train and test image, in the evaluation's preprocessing."""
    import yaml

    from mmssl.eval.backbone_model import BackboneEval
    from mmssl.eval.features import extract
    from mmssl.eval.tasks import _loader
    from mmssl.models.encoders import build_encoder

    size = yaml.safe_load((ssl / "config.yaml").read_text())["image_size"]
    model = BackboneEval(build_encoder({"name": str(ssl / "encoder")}).eval())
    return {split: extract(_loader(DATA, split, size, False, True, 256, 2), lambda b: model.image_features(b["image"]))
            for split in ("train", "test")}


def probe(feats: dict, fraction: float, seed: int) -> float:
    from mmssl.data.subset import balanced_keys
    from mmssl.eval.linear_probe import linear_probe

    train, test = feats["train"], feats["test"]
    chosen = set(balanced_keys(train["key"], train["label"].tolist(), fraction, seed))
    rows = torch.tensor([k in chosen for k in train["key"]])
    return linear_probe(train["features"][rows], train["label"][rows], test["features"], test["label"],
                        seed=seed)["linear_top1"]


def diagnostics(out: Path, fractions: list[float], seeds: list[int], wanted: set[str]) -> dict:
    """FixMatch's diagnostics in each semi-supervised run's last log window: {row|fraction|seed: {mask_rate,
    pseudo_acc, unlabelled_acc}} (the share of unlabelled images above the threshold, the share of those
    pseudo-labels that are right, the prediction's accuracy on all unlabelled images)."""
    found = {}
    for row, (method, init, extra) in SEMI.items():
        for f in fractions if row in wanted else ():
            for s in seeds:
                log = semi_folder(out, method, f, s, init, extra) / "metrics.jsonl"
                rows = [json.loads(ln) for ln in log.read_text().splitlines()] if log.exists() else []
                last = [r for r in rows if "mask_rate" in r][-1:]
                if last:
                    found[f"{row}|{f:g}|{s}"] = {k: last[0][k] for k in ("mask_rate", "pseudo_acc", "unlabelled_acc")}
    return found


def diagnostics_table(found: dict, fractions: list[float], seeds: list[int]) -> str:
    names = {"fixmatch_supervised": "FixMatch's recipe with lambda_u = 0", "pseudo_label": "Pseudo-Label",
             "fixmatch": "FixMatch", "fixmatch_init": "FixMatch from an SSL init",
             "fixmatch_init_supervised": "FixMatch's recipe with lambda_u = 0 from an SSL init"}
    lines = []
    for row, name in names.items():
        cells = []
        for f in fractions:
            got = [found[k] for k in (f"{row}|{f:g}|{s}" for s in seeds) if k in found]
            keys = ("mask_rate", "pseudo_acc", "unlabelled_acc")
            cells.append(" / ".join(f"{statistics.mean(g[k] for g in got):.2f}" for k in keys) if got else "not run")
        if any(c != "not run" for c in cells):
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if not lines:
        return ""
    head = ["", "Last log window of each semi-supervised run, mean over seeds: mask_rate / pseudo_acc / "
                "unlabelled_acc (share of unlabelled images above the threshold / share of those pseudo-labels "
                "right / accuracy of the prediction on every unlabelled image).", "",
            "| run | " + " | ".join(f"{f:.0%} labels" for f in fractions) + " |", "|---" * (len(fractions) + 1) + "|"]
    return "\n".join(head + lines) + "\n"


def table(results: dict, fractions: list[float], seeds: list[int], ssl: list[str], wanted: set[str]) -> str:
    def cell(row: str, f: float) -> str:
        values = [results[k] for k in (f"{row}|{f:g}|{s}" for s in seeds) if k in results]
        if not values:
            return "not run"
        mean = 100 * statistics.mean(values)
        spread = f" ({100 * min(values):.1f} – {100 * max(values):.1f})" if len(values) > 1 else ""
        return f"{mean:.1f}%{spread}"

    rows = [("supervised from scratch", "supervised", "supervised")]
    rows += [(f"linear probe on {m} features", f"linear:{m}", "linear") for m in ssl]
    rows += [(f"{m} + fine-tune", f"finetune:{m}", "finetune") for m in ssl]
    rows += [("FixMatch's recipe with lambda_u = 0 (its labelled images alone)", "fixmatch_supervised",
              "fixmatch_supervised"), ("Pseudo-Label", "pseudo_label", "pseudo_label"),
             ("FixMatch", "fixmatch", "fixmatch")]
    init = results.get("fixmatch_init_from")
    rows += [(f"FixMatch from {init}", "fixmatch_init", "fixmatch_init"),
             (f"FixMatch's recipe with lambda_u = 0 from {init}", "fixmatch_init_supervised",
              "fixmatch_init_supervised")] if init else []
    rows = [(name, key) for name, key, row in rows if row in wanted]
    head = "| row | " + " | ".join(f"{f:.0%} labels ({round(f * 60000):,})" for f in fractions) + " |"
    lines = [head, "|---" * (len(fractions) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(cell(key, f) for f in fractions) + " |" for name, key in rows]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fractions", default="0.01,0.1,1", help="comma-separated shares of the 60,000 training labels")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds; each draws its own labels and new weights")
    p.add_argument("--steps", type=int, default=300, help="optimizer steps of every supervised, fine-tuning and "
                                                           "semi-supervised row")
    p.add_argument("--ssl", default="simclr,byol,mae", help="comma-separated SSL methods (their demo configs)")
    p.add_argument("--ssl-steps", type=int, default=300, help="optimizer steps of each SSL run")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated rows, from {', '.join(ROWS)}")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "label_efficiency",
                   help="runs and the cell cache (OUT/results.json); another budget needs another --out")
    p.add_argument("--force", action="store_true", help="recompute every cell cached in OUT")
    p.add_argument("--finetune", default="", help="space-separated key=value fine-tuning settings for the supervised "
                                                  "and fine-tune rows (python -m mmssl.eval --help-keys), e.g. "
                                                  "'crop_scale_min=0.5 lr=1e-3'")
    p.add_argument("--record", type=Path, default=ROOT / "benchmarks" / "results" / "label_efficiency.json",
                   help="where the JSON record goes; the docs' main table follows the default one")
    args = p.parse_args(argv)
    args.out, args.record = args.out.resolve(), args.record.resolve()
    os.chdir(ROOT)  # DATA and the commands it runs are relative to the repository root
    try:
        fractions = [float(f) for f in args.fractions.split(",")]
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError as e:
        p.error(f"--fractions takes numbers, --seeds integers, comma-separated: {e}")
    if not all(0 < f <= 1 for f in fractions) or min(args.steps, args.ssl_steps) < 1:
        p.error("--fractions must lie in (0, 1], --steps and --ssl-steps must be at least 1")
    ssl = args.ssl.split(",")
    wanted = set(args.rows.split(","))
    if wanted - set(ROWS):
        p.error(f"--rows: unknown {', '.join(sorted(wanted - set(ROWS)))} (choose from {', '.join(ROWS)})")
    if not (ROOT / DATA / "manifest.json").exists():
        run([sys.executable, "tools/build_fashion_mnist.py", "--out", DATA, "--train-per-class", "6000"])
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.out / "results.json"
    results = {} if args.force or not cache.exists() else json.loads(cache.read_text())
    tuned = args.finetune.split()
    budget = {"steps": args.steps, "ssl_steps": args.ssl_steps, "finetune": tuned}
    if any(results.get(k, v) != v for k, v in budget.items()):
        p.error(f"{cache} holds other budgets or settings; use another --out or --force")
    results.update(budget)

    def cell(key: str, compute) -> None:
        if key not in results:
            results[key] = compute()
            cache.write_text(json.dumps(results, indent=1))
            print(f"{key}: {100 * results[key]:.1f}%", flush=True)

    # The semi-supervised rows from random weights need no SSL run; every other row reads one (the
    # supervised row its encoder's architecture and preprocessing).
    from_ssl = wanted & {"fixmatch_init", "fixmatch_init_supervised"}
    needs_ssl = (wanted & {"supervised", "linear", "finetune"}) | from_ssl
    runs = {m: ssl_run(args.out, m, args.ssl_steps) for m in ssl} if needs_ssl else {}
    feats: dict[str, dict] = {}  # frozen features of each SSL run, extracted once
    for f in fractions:
        for s in seeds:
            if "supervised" in wanted:
                cell(f"supervised|{f:g}|{s}", lambda: finetune(runs[ssl[0]], f, s, args.steps, "random", args.out, tuned))
            for m in ssl:
                if "linear" in wanted and f"linear:{m}|{f:g}|{s}" not in results:
                    if m not in feats:  # one feature pass serves every share and seed
                        feats[m] = features(runs[m])
                    for f2 in fractions:
                        cell(f"linear:{m}|{f2:g}|{s}", lambda: probe(feats[m], f2, s))
                if "finetune" in wanted:
                    cell(f"finetune:{m}|{f:g}|{s}", lambda: finetune(runs[m], f, s, args.steps, "run", args.out, tuned))
            # fixmatch_supervised: the same recipe, nothing learnt from unlabelled images
            for row in ("pseudo_label", "fixmatch", "fixmatch_supervised"):
                method, _, extra = SEMI[row]
                if row in wanted:
                    cell(f"{row}|{f:g}|{s}", lambda: semi(method, f, s, args.steps, args.out, extra=extra))
    if from_ssl:
        linear = {m: statistics.mean(v for k, v in results.items() if k.startswith(f"linear:{m}|{fractions[0]:g}|"))
                  for m in ssl if any(k.startswith(f"linear:{m}|") for k in results)}
        best = max(linear, key=linear.get) if linear else ssl[0]
        results["fixmatch_init_from"] = best
        for row in sorted(from_ssl):  # FixMatch first: the row the table is for
            method, _, extra = SEMI[row]
            for f in fractions:
                for s in seeds:
                    cell(f"{row}|{f:g}|{s}", lambda: semi(method, f, s, args.steps, args.out, runs[best], extra))
    found = diagnostics(args.out, fractions, seeds, wanted)
    text = table(results, fractions, seeds, ssl, wanted) + diagnostics_table(found, fractions, seeds)
    (args.out / "table.md").write_text(text)
    print(text)
    write_record(args.record, table=text, results=results, diagnostics=found,
                 data=DATA, fractions=fractions, seeds=seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
