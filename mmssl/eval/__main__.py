"""python -m mmssl.eval RUN_DIR --task {knn,linear,zero-shot,retrieval} --data SHARDS [--split val] [--stage N]

Loads the encoders a run saved in RUN_DIR/encoder/ (CLIP's two towers, or the one backbone of an
image SSL recipe: knn and linear only), evaluates them on a make_shards folder, prints
one JSON object of metrics and appends it (with "event": "eval") to RUN_DIR/metrics.jsonl.
`--stage N` probes a backbone's intermediate stage N instead of its final features
(mmssl.eval.backbone_model).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from ..cli import run_main
from ..config import ConfigError
from .tasks import TASKS, run_tasks


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mmssl.eval", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--task", action="append", choices=TASKS, required=True, help="repeat for several")
    p.add_argument("--data", required=True, help="a folder written by tools/make_shards.py")
    p.add_argument("--split", default="val")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--stage", type=int, default=None,
                   help="probe the output of this stage of the backbone (0 = stem) instead of its final features")
    args = p.parse_args(argv)
    cfg_path = args.run_dir / "config.yaml"
    if not cfg_path.exists():
        raise ConfigError(f"{args.run_dir} is not a run folder (no config.yaml)")
    if not (args.run_dir / "encoder").is_dir():
        raise ConfigError(f"{args.run_dir} has no encoder/ folder (did training finish?)")
    cfg = yaml.safe_load(cfg_path.read_text())
    if (args.run_dir / "encoder" / "heads.safetensors").exists():
        if args.stage is not None:
            raise ConfigError("--stage probes an image SSL backbone; this run saved a CLIP model")
        from .clip_model import load_clip_run

        model = load_clip_run(args.run_dir, cfg)
    elif any((args.run_dir / "encoder" / f).exists() for f in ("config.json", "mmssl_encoder.json")):
        from ..models.encoders import build_encoder
        from .backbone_model import BackboneEval

        model = BackboneEval(build_encoder({"name": str(args.run_dir / "encoder"), "freeze": True}), args.stage)
    else:
        raise ConfigError(f"{args.run_dir}/encoder holds no model this evaluator knows")
    from ..preflight import NEEDS_LABELS, check_source, has_labels

    splits = (args.split, "train") if {"knn", "linear"} & set(args.task) else (args.split,)
    sources = [check_source(args.data, split, "--data")[0] for split in dict.fromkeys(splits)]
    unlabelled = [t for t in args.task if t in NEEDS_LABELS and not (
        sources[0].labels if t == "zero-shot" else all(has_labels(src) for src in sources))]
    if unlabelled:
        raise ConfigError(f"--task {unlabelled[0]} needs labels, and {args.data} has none; "
                          "on unlabelled captions use --task retrieval")
    metrics = run_tasks(model, args.task, args.data, args.split, cfg.get("image_size", 224), args.batch_size, args.workers)
    record = {"event": "eval", "tasks": args.task, "data": args.data, "split": args.split,
              **({"stage": args.stage} if args.stage is not None else {}), **metrics}
    print(json.dumps(record))
    with open(args.run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    run_main(main)
