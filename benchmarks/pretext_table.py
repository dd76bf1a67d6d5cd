#!/usr/bin/env python
"""The pretext-task table: the seeds' classic pretext tasks on a labelled colour set, one backbone and budget.

    python benchmarks/pretext_table.py [--steps 500] [--seeds 0] [--methods rotation,jigsaw_max] [--out runs/pretext_table]

Data: the colour emoji set (`make emoji-set`, tools/build_emoji_set.py: 1,509 train and 348 test
images of 9 Unicode groups, 64 px; docs/data.md). Each method trains with the image SSL driver and
its demo config, moved to this data: 64 px, batch 64, --steps steps, a three-stage ResNet of widths
32, 64, 128, one CPU process. Then kNN (k=20) and linear-probe top-1 on the test split, the train
split as the bank and the probe's training set. The pretext task's own training accuracy (or
loss, for the reconstruction tasks) at the last log is in the table.

Rows:
- rotation; relative patch position with the paper's colour-dropping guard, and without it;
- jigsaw, 3x3 tiles, 100 permutations (--n-perms) chosen for the most distinct set (`perm_set=max`),
  at random and for the least distinct set (`min`): the seeds' Hamming-distance trend;
- colourisation (classification over ab bins, rebalanced); its backbone sees lightness only, so it
  has its own random-init row on lightness;
- the context encoder with each mask shape (central square, random blocks, random region).
Baselines in the same run: raw pixels, the random-init ResNet at seeds 0 to --random-seeds - 1
(their range is how far initialisation alone moves the probes) and on lightness. With --seeds
0,1 every method trains once per seed and the table gives the mean and the range.

With --probe-sizes 24,64 (and --record elsewhere) it trains nothing: it probes the encoders of
--methods and --seeds already in OUT, and the random-init ResNets, at each image size.

Writes OUT/table.md, OUT/results.json, OUT/table.png and the record
benchmarks/results/pretext_table.json. A row whose results are in
OUT/results.json with the same steps is not trained again (--force retrains).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import docs_tables  # noqa: E402
from image_ssl_table import Pixels, plot, probe, resnet_spec, span, train  # noqa: E402
from record import write_record  # noqa: E402
from mmssl.models.colour import LightnessEncoder  # noqa: E402
from mmssl.models.encoders import build_encoder  # noqa: E402
from mmssl.objectives.jigsaw import hamming_distances, permutation_set  # noqa: E402

DATA = "shards/emoji"  # relative to where it runs, like a recipe's data paths
RECORD = ROOT / "benchmarks/results/pretext_table.json"
SIZE, BATCH = 64, 64
WIDTHS = [32, 64, 128]
GRID, N_PERMS = 3, 100  # the paper's jigsaw: 3x3 tiles, 100 permutations (--n-perms: its table's 1,000)
TILES = [f"jigsaw.grid={GRID}", "jigsaw.tile_size=24"]
JIGSAW = TILES + ["jigsaw.tile_norm=true"]
# row -> (objective, its overrides beyond the shared ones); the objective's demo config is the start.
ROWS = {
    "rotation": ("rotation", []),
    "relative_position": ("relative_position", ["relative_position.colour_guard=drop"]),
    "relative_position_no_guard": ("relative_position", ["relative_position.colour_guard=none"]),
    "jigsaw_max": ("jigsaw", JIGSAW + ["jigsaw.perm_set=max"]),
    "jigsaw_random": ("jigsaw", JIGSAW + ["jigsaw.perm_set=random"]),
    "jigsaw_min": ("jigsaw", JIGSAW + ["jigsaw.perm_set=min"]),
    "jigsaw_max_raw_tiles": ("jigsaw", TILES + ["jigsaw.tile_norm=false", "jigsaw.perm_set=max"]),
    "colourisation": ("colourisation", []),
    "inpainting_center": ("inpainting", ["inpainting.mask=center"]),
    "inpainting_blocks": ("inpainting", ["inpainting.mask=blocks"]),
    "inpainting_region": ("inpainting", ["inpainting.mask=region"]),
}
RANDOM, LIGHTNESS = "random-init ResNet", "random-init ResNet on lightness"


def shared_overrides(steps: int, seed: int) -> list[str]:
    return [f"data.train={DATA}", f"data.val={DATA}", f"image_size={SIZE}", f"batch_size={BATCH}", "eval_split=test",
            "eval_every=0", f"seed={seed}", f"backbone.config.hidden_sizes={WIDTHS}".replace(" ", ""),
            f"backbone.config.depths={[1] * len(WIDTHS)}".replace(" ", ""), f"backbone.config.embedding_size={WIDTHS[0] // 2}",
            "log_every=25"]


def mean(records: list[dict], key: str) -> float:
    return sum(r[key] for r in records) / len(records)


def probe_sizes(out: Path, rows: list[str], seeds: list[int], sizes: list[int], random_seeds: int) -> tuple[str, dict]:
    """kNN / linear top-1 of OUT's trained encoders and the random-init ResNets with the images
    resized to each of `sizes`; -> a markdown table of the means (ranges in brackets) and their
    margin over random init, and every probe's figures by row and size.
    Trains nothing. The jigsaw and relative-position encoders learnt on 24-px patches, a third of
    the image; the probes at 64 px show them whole images, at 24 px whole images at a patch's size."""
    scores: dict[str, dict[int, list[dict]]] = {}
    for seed in range(random_seeds):
        torch.manual_seed(seed)
        model = build_encoder(resnet_spec(WIDTHS))
        for size in sizes:
            scores.setdefault(RANDOM, {}).setdefault(size, []).append(probe(model, size, data=DATA))
    for row in rows:
        for seed in seeds:
            folder = out / f"{row}_seed{seed}" / "encoder"
            if not folder.is_dir():
                print(f"{row} seed {seed}: skipped (no {folder}; train it first)", flush=True)
                continue
            model = build_encoder({"name": str(folder), "freeze": True})
            for size in sizes:
                scores.setdefault(row, {}).setdefault(size, []).append(probe(model, size, data=DATA))
                r = scores[row][size][-1]
                print(f"{row:26s} seed {seed} {size:3d} px  kNN {100 * r['knn_top1']:5.1f}  "
                      f"linear {100 * r['linear_top1']:5.1f}", flush=True)
    head = " | ".join(f"{s} px: kNN / linear (vs random init)" for s in sizes)
    lines = [f"Colour emoji test split, frozen features of the encoders in {out}, the images resized to each size "
             f"for the probes; means over seeds {','.join(map(str, seeds))} (random init: seeds 0-{random_seeds - 1}), "
             "ranges in brackets; the margin is against the mean random-init ResNet at the same size.",
             "", f"| method | {head} |", "|---|" + "---|" * len(sizes)]
    for name, by_size in scores.items():
        cells = []
        for size in sizes:
            recs, base = by_size[size], scores[RANDOM][size]
            knn, lin = mean(recs, "knn_top1"), mean(recs, "linear_top1")
            delta = "" if name == RANDOM else (f" ({100 * (knn - mean(base, 'knn_top1')):+.1f} / "
                                               f"{100 * (lin - mean(base, 'linear_top1')):+.1f})")
            ranges = (f"{100 * knn:.1f} ({span(recs, 'knn_top1')}) / {100 * lin:.1f} ({span(recs, 'linear_top1')})"
                      if len(recs) > 1 else f"{100 * knn:.1f} / {100 * lin:.1f}")
            cells.append(ranges + delta)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines), scores


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=500, help="optimizer steps of every pretext run")
    p.add_argument("--seeds", default="0", help="comma-separated seeds; every method trains once per seed")
    p.add_argument("--methods", default=",".join(ROWS), help=f"rows to train, from {', '.join(ROWS)}")
    p.add_argument("--random-seeds", type=int, default=4, help="random-init ResNets probed, seeds 0 to N-1")
    p.add_argument("--n-perms", type=int, default=N_PERMS,
                   help="permutations in each jigsaw set (the paper trains on 100; its Hamming table uses 1000)")
    p.add_argument("--out", type=Path, default=Path("runs/pretext_table"),
                   help="runs and the cache (OUT/results.json); a row cached with other --steps or --n-perms trains again")
    p.add_argument("--force", action="store_true", help="retrain every run cached in OUT")
    p.add_argument("--probe-sizes", default="",
                   help="comma-separated image sizes in px: probe OUT's trained encoders of --methods and --seeds "
                        "at each (trains nothing; needs --record elsewhere than the default)")
    p.add_argument("--record", type=Path, default=RECORD,
                   help="where the JSON record goes; the docs' table follows the default one")
    args = p.parse_args(argv)
    rows = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in rows if m not in ROWS]
    if unknown:
        p.error(f"unknown method '{unknown[0]}' (choose from {', '.join(ROWS)})")

    def numbers(flag: str, text: str, lowest: int) -> list[int]:
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            values = []
        if not values or min(values) < lowest:
            p.error(f"{flag} takes comma-separated whole numbers of {lowest} or more, got '{text}'")
        return values

    seeds = numbers("--seeds", args.seeds, 0)
    if args.steps < 1 or args.random_seeds < 1 or args.n_perms < 2:
        p.error("--steps and --random-seeds must be 1 or more, --n-perms 2 or more")
    if not (Path(DATA) / "manifest.json").is_file():
        p.error(f"no colour set at {DATA}: build it first with: make emoji-set")
    if args.probe_sizes:
        sizes = numbers("--probe-sizes", args.probe_sizes, 16)
        if args.record == RECORD:
            p.error("--probe-sizes writes its own record: name it with --record")
        table, scores = probe_sizes(args.out, rows, seeds, sizes, args.random_seeds)
        print(table)
        write_record(args.record, table=table, results=scores, sizes=sizes)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}

    def save():
        results_path.write_text(json.dumps(results, indent=1))

    # Baselines: raw pixels; the random-init ResNet at several seeds; the same on lightness.
    baselines = results.setdefault("baselines", {})
    for seed in range(args.random_seeds):
        for name, make in ((RANDOM, lambda: build_encoder(resnet_spec(WIDTHS))),
                           (LIGHTNESS, lambda: LightnessEncoder(build_encoder(resnet_spec(WIDTHS))))):
            key = f"{name}, seed {seed}"
            if key not in baselines or args.force:
                torch.manual_seed(seed)
                baselines[key] = probe(make(), SIZE, data=DATA)
                save()
    if "raw pixels" not in baselines or args.force:
        baselines["raw pixels"] = probe(Pixels(), SIZE, data=DATA)
        save()
    for key, r in baselines.items():
        print(f"{key:36s} kNN {100 * r['knn_top1']:5.1f}  linear {100 * r['linear_top1']:5.1f}", flush=True)

    trained = results.setdefault("methods", {})

    def same_budget(r: dict) -> bool:
        """Trained for these --steps (and, jigsaw, with these --n-perms); rows from before n_perms was
        recorded used N_PERMS."""
        return r.get("steps") == args.steps and ("hamming_mean" not in r or r.get("n_perms", N_PERMS) == args.n_perms)

    for row in rows:
        objective, extra = ROWS[row]
        if objective == "jigsaw":
            extra = extra + [f"jigsaw.n_perms={args.n_perms}"]
        for seed in seeds:
            done = trained.get(row, {}).get(str(seed))
            if done and same_budget(done) and not args.force:
                continue
            print(f"training {row} (seed {seed}) for {args.steps} steps ...", flush=True)
            r = train(f"{row}_seed{seed}", args.steps, args.out, config=f"{objective}_demo",
                      overrides=shared_overrides(args.steps, seed) + extra)
            del r["eval"]
            if objective == "jigsaw":
                how = next(o.split("=")[1] for o in extra if o.startswith("jigsaw.perm_set="))
                r["hamming_mean"], r["hamming_min"] = hamming_distances(permutation_set(GRID * GRID, args.n_perms, how))
                r["n_perms"] = args.n_perms
            trained.setdefault(row, {})[str(seed)] = r
            save()
            acc = f"pretext accuracy {100 * r['last_accuracy']:.1f}" if r["last_accuracy"] is not None else ""
            print(f"{row:20s} seed {seed}  kNN {100 * r['knn_top1']:5.1f}  linear {100 * r['linear_top1']:5.1f}  "
                  f"loss {r['first_loss']:.3f} -> {r['last_loss']:.3f}  {acc}  {r['minutes']:.1f} min", flush=True)

    randoms = [baselines[f"{RANDOM}, seed {s}"] for s in range(args.random_seeds)]
    lightness = [baselines[f"{LIGHTNESS}, seed {s}"] for s in range(args.random_seeds)]
    summary = {"raw pixels": baselines["raw pixels"],
               RANDOM: {k: mean(randoms, k) for k in ("knn_top1", "linear_top1")},
               LIGHTNESS: {k: mean(lightness, k) for k in ("knn_top1", "linear_top1")}}
    manifest = json.loads((Path(DATA) / "manifest.json").read_text())
    n_img, n_test = manifest["splits"]["train"]["count"], manifest["splits"]["test"]["count"]
    lines = [f"Colour emoji test split ({n_test} images, {len(manifest['labels'])} groups), frozen features; "
             f"pretraining: {args.steps} steps of "
             f"batch {BATCH} on {n_img:,} training images (about {args.steps * BATCH / n_img:.0f} epochs), one CPU "
             f"process, {SIZE} px, ResNet widths {','.join(map(str, WIDTHS))}. Figures are means over the seeds named; "
             f"ranges in brackets. The margin is against the mean random-init ResNet (on lightness for colourisation)."
             + (f" Jigsaw: {GRID}x{GRID} tiles, sets of {args.n_perms} permutations."
                if any(ROWS[r][0] == "jigsaw" and r in trained for r in ROWS) else ""),
             "", "| method | seeds | kNN top-1 (k=20) | linear top-1 | vs random init (kNN / linear) | pretext: last accuracy "
             "or loss | Hamming mean / min | minutes |", "|---|---|---|---|---|---|---|---|"]

    def cell(records, key):
        return f"{100 * mean(records, key):.1f}" + (f" ({span(records, key)})" if len(records) > 1 else "")

    lines.append(f"| raw pixels | | {cell([baselines['raw pixels']], 'knn_top1')} | "
                 f"{cell([baselines['raw pixels']], 'linear_top1')} | | | | |")
    for name, recs in ((RANDOM, randoms), (LIGHTNESS, lightness)):
        lines.append(f"| {name} | 0-{args.random_seeds - 1} | {cell(recs, 'knn_top1')} | {cell(recs, 'linear_top1')} "
                     f"| | | | |")
    for row in ROWS:
        recs = [r for s, r in sorted(trained.get(row, {}).items()) if same_budget(r)]
        if not recs:
            continue
        base = summary[LIGHTNESS if row == "colourisation" else RANDOM]
        delta = (f"{100 * (mean(recs, 'knn_top1') - base['knn_top1']):+.1f} / "
                 f"{100 * (mean(recs, 'linear_top1') - base['linear_top1']):+.1f}")
        pretext = (f"accuracy {cell(recs, 'last_accuracy')}" if recs[0]["last_accuracy"] is not None
                   else f"loss {recs[0]['first_loss']:.3f} → {mean(recs, 'last_loss'):.3f}")
        ham = f"{recs[0]['hamming_mean']:.2f} / {recs[0]['hamming_min']}" if "hamming_mean" in recs[0] else ""
        used = ",".join(s for s, r in sorted(trained[row].items()) if same_budget(r))
        lines.append(f"| {row} | {used} | {cell(recs, 'knn_top1')} | {cell(recs, 'linear_top1')} | {delta} | {pretext} "
                     f"| {ham} | {mean(recs, 'minutes'):.1f} |")
        summary[row] = {k: mean(recs, k) for k in ("knn_top1", "linear_top1")}
    table = "\n".join(lines)
    (args.out / "table.md").write_text(table + "\n")
    plot(summary, args.out / "table.png", title=f"Colour emoji, frozen features after {args.steps} CPU steps")
    print(table)
    write_record(args.record, results=results, table=table)
    if args.record == RECORD:
        docs_tables.main([])  # the docs' block of this record follows it
    return 0


if __name__ == "__main__":
    sys.exit(main())
