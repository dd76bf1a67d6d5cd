"""Turn raw corpora into mmssl shards: OUT/{train,val}-NNNNNN.tar + manifest.json + sizes.json.

`tools/make_shards.py` is `main`; other tools call `main([...])` in-process. The inputs are listed
by `inputs.py` and encoded by `encode.py` in worker processes; this module holds the command.

    python tools/make_shards.py images     SRC_DIR OUT   # first-level subfolder = class
    python tools/make_shards.py captions   TABLE   OUT   # csv/tsv/jsonl: path + caption columns
    python tools/make_shards.py videos     SRC     OUT   # folder of classes, or a table
    python tools/make_shards.py audio      SRC     OUT   # folder of classes, or a table
    python tools/make_shards.py webdataset SRC     OUT   # re-shard + validate existing tars (img2dataset, ...)

Unusable inputs (corrupt media, unreadable paths, empty captions, links and other non-files) are
skipped and listed in the manifest's `skipped`. Exit status: 0 when at least one sample was written,
1 when none was, 2 for a missing source, a bad option, or an OUT that another writer holds. After a
crash or `kill -9`, run the same command with `--resume`: it refuses a source that changed since.

A captions table may list one image on several rows (COCO, Flickr30k): each row becomes its own
sample, keyed `<image key>_<row number>`, and every sample's json carries `image_id` (the image's
key), so evaluation groups the captions of one image and the split keeps them together.
By default 10% of the inputs, chosen by a hash of the key, form a `val` split (`--val-fraction 0`
for none); `--split-dirs` takes the splits from the folders instead.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
from collections import Counter
from multiprocessing import Pool
from pathlib import Path

from .encode import encode_job, worker_init
from .inputs import DEFAULT_VAL_FRACTION, Item, UsageError, enumerate_inputs, shown, split_of

class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        print(f"make_shards: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="make_shards.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    def common(sp):
        sp.add_argument("source")
        sp.add_argument("out")
        sp.add_argument("--samples-per-shard", type=int, default=1000)
        sp.add_argument("--max-shard-bytes", type=int, default=None, help="start a new shard past this size")
        sp.add_argument("--workers", type=int, default=1, help="parallel encoding processes")
        sp.add_argument("--val-fraction", type=float, default=None,
                        help="share of inputs in the val split, by key hash (default 0.1; 0 for none)")
        sp.add_argument("--seed", type=int, default=0, help="seed of the val split hash and of the write order")
        sp.add_argument("--keep-order", action="store_true",
                        help="write inputs in sorted path order instead of a seeded shuffle")
        sp.add_argument("--resume", action="store_true", help="finish an interrupted run into the same OUT")
        sp.add_argument("--overwrite", action="store_true",
                        help="delete what make_shards wrote in OUT (nothing else) and start again")
        sp.add_argument("--max-pixels", type=int, default=64_000_000,
                        help="skip images with more pixels than this, read from the header before decoding")
        sp.add_argument("--no-progress", action="store_true")
        return sp

    s = common(sub.add_parser("images", help="folder tree, first-level subfolder = class"))
    s.add_argument("--max-size", type=int, help="shrink images whose longer side exceeds this")
    s.add_argument("--format", choices=["jpg", "png", "webp"], help="re-encode every image to this format")
    s.add_argument("--split-dirs", action="store_true",
                   help="first-level folders are the splits (train/, test/, ...), second-level the classes")

    s = common(sub.add_parser("captions", help="table of media path + caption"))
    s.add_argument("--path-col", default="path")
    s.add_argument("--caption-col", default="caption")
    s.add_argument("--max-size", type=int)
    s.add_argument("--format", choices=["jpg", "png", "webp"])
    s.add_argument("--max-seconds", type=float)
    s.add_argument("--fps", type=float)
    s.add_argument("--clip-seconds", type=float)
    s.add_argument("--sample-rate", type=int, default=16000)

    s = common(sub.add_parser("videos", help="folder of classes, or a table; keeps the audio track"))
    s.add_argument("--path-col", default="path")
    s.add_argument("--caption-col", default=None, help="optional caption column of a table")
    s.add_argument("--max-seconds", type=float, help="keep the first N seconds")
    s.add_argument("--fps", type=float, help="resample to this frame rate")
    s.add_argument("--max-size", type=int, help="bound the longer side")
    s.add_argument("--clip-seconds", type=float, help="cut into consecutive clips <key>_000, <key>_001, ...")
    s.add_argument("--split-dirs", action="store_true",
                   help="first-level folders are the splits (train/, test/, ...), second-level the classes")

    s = common(sub.add_parser("audio", help="folder of classes, or a table; writes mono FLAC"))
    s.add_argument("--path-col", default="path")
    s.add_argument("--caption-col", default=None, help="optional caption or transcript column")
    s.add_argument("--sample-rate", type=int, default=16000)
    s.add_argument("--split-dirs", action="store_true",
                   help="first-level folders are the splits (train/, test/, ...), second-level the classes")

    common(sub.add_parser("webdataset", help="re-shard and validate existing WebDataset tars"))
    return p


def check_options(args) -> None:
    if args.samples_per_shard < 1:
        raise UsageError(f"--samples-per-shard must be >= 1, got {args.samples_per_shard}")
    if args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    if args.val_fraction is not None and not 0.0 <= args.val_fraction < 1.0:
        raise UsageError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    for name in ("max_size", "max_seconds", "fps", "clip_seconds", "sample_rate", "max_shard_bytes", "max_pixels"):
        v = getattr(args, name, None)
        if v is not None and v <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {v}")
    if getattr(args, "split_dirs", False) and args.val_fraction:
        raise UsageError("--split-dirs takes the splits from the folders; drop --val-fraction")
    if args.val_fraction is None:
        args.val_fraction = 0.0 if getattr(args, "split_dirs", False) else DEFAULT_VAL_FRACTION
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite exclude each other")


def source_fingerprint(args, items: list[Item], labels: list[str]) -> dict:
    """What --resume compares: every input's name, size and mtime, the table's bytes, the labels."""
    h = hashlib.sha256()
    src = Path(args.source)
    if src.is_file():
        h.update(hashlib.sha256(src.read_bytes()).digest())
    for it in items:
        st = None
        if isinstance(it.src, Path):
            try:
                st = it.src.stat()
            except OSError:
                pass
        h.update(f"{it.key}\0{it.path}\0{st.st_size if st else -1}\0{st.st_mtime_ns if st else -1}\n"
                 .encode("utf-8", "surrogateescape"))
    return {"type": "source", "fingerprint": h.hexdigest(), "inputs": len(items), "labels": labels}


def check_same_source(journal_source: dict | None, now: dict) -> None:
    if journal_source is None:
        raise UsageError("--resume: this folder's journal does not record its source; rebuild it with --overwrite")
    if journal_source.get("fingerprint") == now["fingerprint"]:
        return
    was, is_ = journal_source.get("labels", []), now["labels"]
    what = (f"labels were {was}, now {is_}" if was != is_ else
            f"{journal_source.get('inputs')} inputs then, {now['inputs']} now" if journal_source.get("inputs") != now["inputs"]
            else "files were changed")
    raise UsageError(f"--resume: the source changed since this folder was started ({what}); "
                     "rebuild it from scratch with --overwrite")


def prepare_output(out: Path, args) -> None:
    """Refuse to write over what is not ours; with --overwrite remove only what make_shards wrote."""
    from ..shards import MANIFEST, SIZES
    from ..writer import FORMAT, JOURNAL, written_files

    ours = written_files(out)
    ours_names = {p.name for p in ours}
    shard_like = set(out.glob("*-[0-9][0-9][0-9][0-9][0-9][0-9].tar"))
    present = [p for p in [out / MANIFEST, out / SIZES, out / JOURNAL, *sorted(shard_like)] if p.exists()]
    foreign = [p for p in present if p.name not in ours_names and p.name not in (MANIFEST, SIZES, JOURNAL)]
    manifest_path = out / MANIFEST
    foreign_manifest = False
    if manifest_path.exists():
        try:
            foreign_manifest = json.loads(manifest_path.read_text()).get("format") != FORMAT
        except (ValueError, AttributeError):
            foreign_manifest = True
    if args.resume:
        if foreign_manifest or foreign:
            raise UsageError(f"--resume: {out} holds files make_shards did not write "
                             f"({(foreign or [manifest_path])[0].name}); nothing was changed")
        return
    if not present:
        return
    if not args.overwrite:
        raise UsageError(f"{out} already holds shards or a manifest: pass --resume to finish that run "
                         "or --overwrite to replace what make_shards wrote there")
    if foreign:
        raise UsageError(f"--overwrite removes only what make_shards wrote, and {foreign[0]} is not listed in "
                         f"{out}'s manifest or journal: move it away first")
    for p in ours:
        p.unlink(missing_ok=True)


def run(args) -> int:
    from ...lock import FolderLock, FolderLocked

    check_options(args)
    items, labels = enumerate_inputs(args)
    out = Path(args.out)
    try:
        lock = FolderLock(out, "make_shards").acquire()
    except FolderLocked as exn:
        raise UsageError(str(exn)) from None
    try:
        prepare_output(out, args)
        return write_all(args, items, labels, out)
    finally:
        lock.release()


def write_all(args, items: list[Item], labels: list[str], out: Path) -> int:
    from tqdm import tqdm

    from ..writer import Journal, ShardWriter, write_manifest

    source = source_fingerprint(args, items, labels)
    journal = Journal(out, resume=args.resume)
    if args.resume and (journal.shards or journal.skipped):
        check_same_source(journal.source, source)
    journal.set_source(source)
    done_items = {k for rec in journal.shards.values() for k in rec.get("items", [])}
    done_keys = journal.done_keys()
    todo = [it for it in items if it.key not in done_items]
    if not getattr(args, "keep_order", False):
        # Sorted paths put a class folder's files side by side, and a loader's shuffle buffer only
        # mixes nearby samples: batches would hold one or two classes (few negatives from other
        # classes, skewed BatchNorm statistics). A seeded shuffle keeps runs reproducible.
        random.Random(args.seed).shuffle(todo)
    opts = {k: getattr(args, k, None) for k in ("max_size", "format", "max_seconds", "fps", "clip_seconds", "sample_rate",
                                                "max_pixels")}
    writers: dict = {}

    def writer_for(split: str):
        if split not in writers:
            writers[split] = ShardWriter(out, split, journal, args.samples_per_shard, args.max_shard_bytes,
                                         journal.next_index(split))
        return writers[split]

    started, written, skipped = time.time(), 0, Counter()
    jobs = ((it, opts) for it in todo)
    pool = Pool(args.workers, initializer=worker_init) if args.workers > 1 else None
    results = pool.imap(encode_job, jobs, chunksize=1) if pool else map(encode_job, jobs)
    bar = tqdm(results, total=len(todo), unit="input", desc=f"{args.command} -> {out}", disable=args.no_progress,
               file=sys.stderr, dynamic_ncols=True)
    try:
        for item, samples, reason in bar:
            if reason:
                journal.add_skip(item.path, reason)
                skipped[reason.split(":")[0]] += 1
                continue
            writer = writer_for(item.split or split_of(item.group or item.key, args.val_fraction, args.seed))
            fresh = [s for s in samples if s[0] not in done_keys]  # --resume keeps earlier copies
            for i, (key, members, stats) in enumerate(fresh):
                writer.write(key, members, stats, completes_item=item.key if i == len(fresh) - 1 else None)
                written += 1
    except BaseException:
        for w in writers.values():
            w.abort()  # a shard cut short is never renamed into place; --resume redoes its inputs
        raise
    else:
        for w in writers.values():
            w.flush()
    finally:
        if pool:
            pool.terminate()
    options = {k: v for k, v in vars(args).items() if k not in ("resume", "overwrite", "no_progress")}
    renamed = sum(1 for it in items if it.extra.get("renamed_from"))
    manifest = write_manifest(out, journal, labels, shown(str(args.source)), options,
                              notes={"renamed_keys": renamed} if renamed else None)
    journal.close()
    report(manifest, out, written, skipped, time.time() - started, len(items) - len(todo))
    if renamed:
        print(f"  renamed {renamed} samples whose keys repeated across input tars or collided once cleaned")
    total = sum(s["count"] for s in manifest["splits"].values())
    return 0 if total > 0 else 1


def report(manifest: dict, out: Path, written: int, skipped: Counter, seconds: float, already: int) -> None:
    lines = [f"wrote {written} samples in {seconds:.1f}s ({written / max(seconds, 1e-9):.1f} samples/s)"
             + (f"; {already} inputs were already done (--resume)" if already else "")]
    for split, entry in manifest["splits"].items():
        lines.append(f"  {split}: {entry['count']} samples in {len(entry['shards'])} shards, "
                     f"{entry['bytes'] / 1e6:.1f} MB -> {out / entry['pattern']}")
    if manifest["skipped"]:
        by_reason = ", ".join(f"{r}: {n}" for r, n in Counter(
            s["reason"].split(":")[0] for s in manifest["skipped"]).most_common())
        lines.append(f"  skipped {len(manifest['skipped'])} inputs ({by_reason}); see manifest.json 'skipped'")
    if not manifest["splits"]:
        lines.append("  no sample could be written")
    print("\n".join(lines))


def main(argv=None) -> int:
    import errno

    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except UsageError as exn:
        print(f"make_shards: error: {exn}", file=sys.stderr)
        return 2
    except OSError as exn:
        if exn.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
        print(f"make_shards: error: {os.strerror(exn.errno).lower()} while writing {args.out}: the finished shards "
              "are kept; free some space and run the same command with --resume", file=sys.stderr)
        return 1
