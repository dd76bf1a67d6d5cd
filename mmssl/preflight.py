"""Checks a recipe runs before its first step, so that a run on the user's data never trains for an
hour and then fails on what could have been known at the start.

- Every data source the run will read resolves (folder, manifest, split, shards on disk); the
  default demo folders, when missing, name the command that builds them.
- Evaluation fits the data: tasks that need labels run only where the data has them. A task the
  user asked for explicitly and that cannot run is an error; a default one is dropped, said in one
  line (CLIP on an unlabelled captions corpus evaluates retrieval only).
- An evaluation set that is the training set itself (the same folder with no split in its names)
  is refused.
All errors are `DataSpecError` or `ConfigError`: one line and exit status 2 through `mmssl.cli`.
"""
from __future__ import annotations

from .config import ConfigError
from .data.reader import read_segment
from .data.shards import DataSpecError, Segment, resolve_sources, split_of_name

# Tasks that score predictions against integer labels (`cls`) or against label names.
NEEDS_LABELS = {"knn", "linear", "zero-shot"}
DEMO_DATA = {
    "shards/default_images": "make corpus",
    "shards/default_videos": "make corpus",
    "shards/fashion_mnist": "python tools/build_fashion_mnist.py",
    "shards/motion": "python tools/build_motion_set.py",
    "shards/av": "python tools/build_av_set.py",
    "shards/speech_speakers": "python tools/build_speech_set.py",
    "shards/speech_digits": "python tools/build_speech_set.py",
}


def check_source(spec, split: str, key: str):
    """Resolve `spec`'s `split`; a failure is one line naming the config key (and, for a missing
    demo folder, the command that makes it)."""
    try:
        return resolve_sources(spec, split)
    except DataSpecError as exn:
        hint = DEMO_DATA.get(str(spec).rstrip("/"))
        more = f"; build it with `{hint}`{' (part of `make demo`)' if hint == 'make corpus' else ''} " \
            f"or set {key}=YOUR_SHARDS" if hint else ""
        raise DataSpecError(f"{key}: {exn}{more}") from None


def has_labels(source) -> bool:
    """A resolved source's samples carry integer labels: its manifest lists label names, or the
    first sample of its first shard has a `cls` member."""
    if source.labels:
        return True
    for sample in read_segment(Segment(source.urls[0], 0, 1), {"cls"}, lambda *a: None):
        return "cls" in sample
    return False


def check_training_data(cfg: dict) -> None:
    """Before anything is built: the run folder may be written (mmssl.train.check_run_dir), the
    training data resolves, and every generator is seeded, so that the objective a recipe builds
    next starts from the same weights in every run with this seed."""
    from accelerate.utils import set_seed

    from .train import check_run_dir

    check_run_dir(cfg)
    betas = cfg.get("betas", [0.9, 0.999])
    if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
        raise ConfigError(f"betas must be two numbers in [0, 1), as [0.9, 0.95]; got {betas}")
    check_source(cfg["data"]["train"], "train", "data.train")
    follow_train(cfg)
    set_seed(cfg["seed"])


def follow_train(cfg: dict, say=print) -> None:
    """data.val that followed the user's data.train (`Key.follows`) is scored on its `eval_split`.
    A folder whose shards name no split at all (img2dataset's 00000.tar) holds nothing out: its
    evaluation is skipped, said in one line, rather than scoring the training samples. A folder with
    other splits but not this one is a one-line error naming the splits it has."""
    data = cfg["data"]
    if "data.val" not in getattr(cfg, "followed", ()) or not data["val"]:
        return
    split = cfg.get("eval_split", "val")
    try:
        urls = [u for src in resolve_sources(data["val"], split) for u in src.urls]
    except DataSpecError as exn:
        raise DataSpecError(f"data.val follows data.train: {exn}; set eval_split to one of its splits, "
                            "or data.val") from None
    if all(split_of_name(u) == split for u in urls):
        say(f"data.val follows data.train: evaluating on its '{split}' split")
        return
    data["val"] = ""
    say(f"data.train ({data['train']}) names no held-out split and data.val is not set: no evaluation "
        "(make_shards holds one out with --val-fraction; or set data.val)")


def plan_eval(cfg: dict, splits: tuple[str, ...], key: str = "eval_tasks", say=print) -> list[str]:
    """The evaluation tasks that can run on `data.val` (each split in `splits` checked), with the
    labels each needs. Sets cfg[key] to that list and returns it ([] when data.val is empty)."""
    val = cfg["data"]["val"]
    if not val:
        cfg[key] = []
        return []
    # Each split is resolved once: a folder without a manifest is counted by scanning its tars.
    sources = {split: check_source(val, split, "data.val")[0] for split in dict.fromkeys(splits)}
    if val == cfg["data"]["train"] and all(split_of_name(u) is None for u in sources[splits[0]].urls):
        raise ConfigError(f"data.val is data.train ({val}), whose shards are one split: evaluation would score "
                          "the training samples; give data.val a held-out folder (make_shards writes one with "
                          "--val-fraction)")
    tasks = list(cfg[key])
    labelled = all(has_labels(src) for src in sources.values())
    named = bool(sources[splits[0]].labels)
    missing = [t for t in tasks if t in NEEDS_LABELS and not (named if t == "zero-shot" else labelled)]
    if missing:
        what = "label names (a manifest 'labels' list)" if missing == ["zero-shot"] else "labels (cls members)"
        if key in getattr(cfg, "explicit", ()):
            raise ConfigError(f"{key} asks for {', '.join(missing)}, but {val} has no {what}; "
                              f"drop {'it' if len(missing) == 1 else 'them'} from {key}")
        tasks = [t for t in tasks if t not in missing]
        say(f"{val} has no {what}: skipping {', '.join(missing)}; evaluating "
            f"{', '.join(tasks) if tasks else 'nothing'}")
    cfg[key] = tasks
    return tasks


def check_probe(data: str, split: str, train_split: str, key: str) -> None:
    """A labelled probe set (AVC's audio probe, CPC's probes) exists and has labels, before training."""
    for s in dict.fromkeys((split, train_split)):
        if not has_labels(check_source(data, s, key)[0]):
            raise ConfigError(f"{key}: {data} split '{s}' has no labels (cls members) to probe with")
