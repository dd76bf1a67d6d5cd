"""python -m mmssl.eval RUN_DIR --task {knn,linear,zero-shot,retrieval,finetune} --data SHARDS [--split val] [--stage N]

Loads the encoders a run saved in RUN_DIR/encoder/ (CLIP's two towers, or the one backbone of an
image SSL recipe: knn and linear only), evaluates them on a make_shards folder, prints
one JSON object of metrics and appends it (with "event": "eval") to RUN_DIR/metrics.jsonl.
`--stage N` probes a backbone's intermediate stage N instead of its final features
(mmssl.eval.backbone_model).

`--task finetune` (alone) trains the run's encoder (image, video or audio) end to end with a fresh
linear head on a class-balanced share of the labels (mmssl.eval.finetune): `--label-fraction`,
`--seed`, `--init random` for the supervised baseline, and any fine-tuning key as key=value
(`python -m mmssl.eval RUN --task finetune --data D --help-keys` lists them).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from ..cli import run_main
from ..config import ConfigError
from ..models.serialization import META
from .tasks import TASKS, run_tasks

FLAGS = ("label_fraction", "seed", "init")  # fine-tuning keys that also have a --flag


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mmssl.eval", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--task", action="append", choices=(*TASKS, "finetune"), required=True, help="repeat for several")
    p.add_argument("--data", required=True, help="a folder written by tools/make_shards.py")
    p.add_argument("--split", default="val")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--stage", type=int, default=None,
                   help="probe the output of this stage of the backbone (0 = stem) instead of its final features")
    from ..config import keys_of
    from .finetune import FINETUNE_DEFAULTS

    keys = keys_of(FINETUNE_DEFAULTS)
    for name in FLAGS:
        p.add_argument(f"--{name.replace('_', '-')}", help=f"finetune: {keys[name].help}")
    p.add_argument("--help-keys", nargs=0, action=_HelpKeys, help="list every fine-tuning key and exit")
    p.add_argument("overrides", nargs="*", help="finetune: key=value for any fine-tuning key")
    args = p.parse_intermixed_args(argv)
    finetuning = "finetune" in args.task
    if finetuning and len(args.task) > 1:
        raise ConfigError("--task finetune trains a model: run it on its own, not with other tasks")
    tuned = [n for n in FLAGS if getattr(args, n) is not None] + args.overrides
    if tuned and not finetuning:
        raise ConfigError(f"{tuned[0]} is a fine-tuning setting: it needs --task finetune")
    cfg_path = args.run_dir / "config.yaml"
    if not cfg_path.exists():
        raise ConfigError(f"{args.run_dir} is not a run folder (no config.yaml)")
    if not (args.run_dir / "encoder").is_dir():
        raise ConfigError(f"{args.run_dir} has no encoder/ folder (did training finish?)")
    if finetuning:
        from .finetune import finetune

        metrics, main_process = finetune(args.run_dir, args.data, args.split, args.overrides + [
            f"{n}={getattr(args, n)}" for n in FLAGS if getattr(args, n) is not None])
        if main_process:
            _report(args, {"event": "eval", "tasks": args.task, "data": args.data, "split": args.split, **metrics})
        return 0
    cfg = yaml.safe_load(cfg_path.read_text())
    if (args.run_dir / "encoder" / "heads.safetensors").exists():
        if args.stage is not None:
            raise ConfigError("--stage probes an image SSL backbone; this run saved a CLIP model")
        from .clip_model import load_clip_run

        model = load_clip_run(args.run_dir, cfg)
    elif any((args.run_dir / "encoder" / f).exists() for f in ("config.json", META)):
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
    from ..models.encoders import saved_resize

    # The run's saved image processor says how its encoder's input was framed (FixMatch: no zoom).
    metrics = run_tasks(model, args.task, args.data, args.split, cfg.get("image_size", 224), args.batch_size, args.workers,
                        resize=saved_resize(args.run_dir / "encoder"))
    _report(args, {"event": "eval", "tasks": args.task, "data": args.data, "split": args.split,
                   **({"stage": args.stage} if args.stage is not None else {}), **metrics})
    return 0


class _HelpKeys(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        from ..config import help_text
        from .finetune import FINETUNE_DEFAULTS

        print(help_text(FINETUNE_DEFAULTS, "python -m mmssl.eval RUN --task finetune: fine-tuning keys"))
        parser.exit()


def _report(args, record: dict) -> None:
    """Print the record and append it to the run's metrics.jsonl."""
    print(json.dumps(record))
    with open(args.run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    run_main(main)
