#!/usr/bin/env python
"""Turn raw corpora into mmssl shards: OUT/{train,val}-NNNNNN.tar + manifest.json + sizes.json.

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
import csv
import hashlib
import io
import json
import os
import random
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmssl.data.audio import AUDIO_EXTENSIONS  # noqa: E402
from mmssl.data.image import IMAGE_EXTENSIONS  # noqa: E402
from mmssl.data.video import VIDEO_EXTENSIONS  # noqa: E402

AUDIO_INPUTS = AUDIO_EXTENSIONS + ("m4a", "aac", "aiff", "aif")
# Members that could execute code when loaded by a careless reader: never copied into our shards.
UNSAFE_MEMBERS = {"pyd", "pickle", "pkl", "pth", "pt", "joblib", "npy", "npz"}


DEFAULT_VAL_FRACTION = 0.1


class UsageError(Exception):
    """Bad source or option: printed as one line, exit status 2."""


@dataclass
class Item:
    """One input: a file (or an existing shard sample) plus what is known about it."""

    key: str
    path: str  # shown in `skipped`
    kind: str  # image | video | audio | sample
    src: object = None  # a Path, or for `webdataset` the raw sample dict
    label: int | None = None
    caption: str | None = None
    extra: dict = field(default_factory=dict)
    split: str | None = None  # set by --split-dirs; otherwise chosen by a hash of `group`
    group: str | None = None  # what the split hash reads: the image of a caption row (default: key)


# ---- keys and splits -------------------------------------------------------------------------
def make_key(rel_path: str) -> str:
    """Stable, unique, dot-free key: a readable slug of the path plus 8 hex digits of its hash."""
    stem = rel_path.rsplit(".", 1)[0] if "." in os.path.basename(rel_path) else rel_path
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_")[-60:] or "x"
    return f"{slug}_{hashlib.sha1(rel_path.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"


def shown(name: str) -> str:
    """A file name fit for json and terminals: bytes that are not UTF-8 become \\xNN escapes."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def split_of(key: str, val_fraction: float, seed: int) -> str:
    """Deterministic train/val assignment by key hash (clips of one video share their parent's)."""
    if val_fraction <= 0:
        return "train"
    h = int(hashlib.sha1(f"{seed}:{key}".encode()).hexdigest()[:12], 16) / float(1 << 48)
    return "val" if h < val_fraction else "train"


def ext_of(path: str) -> str:
    e = os.path.splitext(path)[1].lower().lstrip(".")
    return "jpg" if e == "jpeg" else e


# ---- enumerating inputs ----------------------------------------------------------------------
def list_folder(src: Path, exts: tuple[str, ...], kind: str, split_dirs: bool = False) -> tuple[list[Item], list[str]]:
    """Files under `src`; a first-level subfolder names the class (files at the top have none).

    With `split_dirs`, the first level names the split instead (`train/`, `val/`, `test/`, as in
    ImageNet-style layouts) and the second level names the class.
    """
    if not src.is_dir():
        raise UsageError(f"source folder not found: {src}")
    splits = sorted(p.name for p in src.iterdir() if p.is_dir() and not p.name.startswith("."))
    if split_dirs:
        bad = [s for s in splits if not re.fullmatch(r"[A-Za-z0-9_]+", s)]
        if not splits or bad:
            raise UsageError(f"--split-dirs: {src} needs split folders named like train/ val/ test/"
                             + (f", not '{bad[0]}'" if bad else ""))
        labels = sorted({p.name for s in splits for p in (src / s).iterdir() if p.is_dir() and not p.name.startswith(".")})
    else:
        labels = splits
    items = []
    for path in sorted(src.rglob("*")):
        if path.name.startswith(".") or ext_of(path.name) not in exts or path.is_dir():
            continue
        rel = path.relative_to(src).as_posix()
        if not path.is_file():  # a dangling link, a fifo, a device: listed, never opened
            why = "dangling symlink" if path.is_symlink() and not path.exists() else "not a regular file"
            items.append(Item(f"__bad_{len(items)}", shown(rel), "damaged", None, extra={"reason": why}))
            continue
        parts = rel.split("/")
        split = parts.pop(0) if split_dirs and len(parts) > 1 else None
        if split_dirs and split is None:
            continue  # a file beside the split folders belongs to no split
        top = parts[0] if len(parts) > 1 else None
        label = labels.index(top) if top in labels else None
        items.append(Item(make_key(rel), shown(rel), kind, path, label, None, {"label": shown(top)} if top else {},
                          split))
    if split_dirs and not labels:
        raise UsageError(f"--split-dirs: no class folders under the split folders of {src} "
                         f"(expected {src}/<split>/<class>/<file>)")
    return items, [shown(n) for n in labels] if any(i.label is not None for i in items) else []


def read_table(path: Path) -> list[dict]:
    if not path.is_file():
        raise UsageError(f"table not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv", ".tsv"):
        raise UsageError(f"table must be .csv, .tsv or .jsonl: {path}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exn:
        line = raw[: exn.start].count(b"\n") + 1
        raise UsageError(f"{path}:{line}: not UTF-8 (byte 0x{raw[exn.start]:02x}); convert the table, "
                         f"e.g. iconv -f latin1 -t utf-8 {path.name} > utf8_{path.name}") from None
    if suffix == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exn:
                    raise UsageError(f"{path}:{n}: not JSON ({exn.msg})") from None
                if not isinstance(row, dict):
                    raise UsageError(f"{path}:{n}: each line must be a JSON object, got {type(row).__name__}")
                rows.append(row)
        return rows
    try:
        rows = list(csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if suffix == ".tsv" else ","))
    except csv.Error as exn:
        raise UsageError(f"{path}: not a readable {suffix[1:]} table ({exn})") from None
    # A row with more cells than the header puts the rest under the key None: keep them visible.
    return [{("_extra" if k is None else k): v for k, v in row.items()} for row in rows]


def list_table(table: Path, path_col: str, caption_col: str | None, kinds: dict[str, str]) -> tuple[list[Item], list[str]]:
    rows = read_table(table)
    if not rows:
        raise UsageError(f"table has no rows: {table}")
    for col in (path_col, caption_col):
        if col and col not in rows[0]:
            raise UsageError(f"table {table} has no column '{col}' (columns: {', '.join(rows[0])})")
    label_names = sorted({str(r["label"]) for r in rows if r.get("label") not in (None, "")})
    rows_per_path = Counter(str(row.get(path_col) or "") for row in rows)
    seen: Counter = Counter()
    items = []
    for n, row in enumerate(rows, 1):
        rel = str(row.get(path_col) or "")
        if not rel:
            items.append(Item(f"__bad_{n}", f"{table.name}:{n}", "damaged", None, extra={"reason": "empty path"}))
            continue
        kind = kinds.get(ext_of(rel), "unknown")
        extra = {k: v for k, v in row.items() if k not in (path_col, caption_col)}
        label = label_names.index(str(row["label"])) if row.get("label") not in (None, "") else None
        caption = None if caption_col is None else str(row.get(caption_col) or "")
        image_key = make_key(rel)
        # Several rows of one file (captions of one image): one sample per row, grouped by image_id.
        key = image_key if rows_per_path[rel] == 1 else f"{image_key}_{seen[rel]:03d}"
        seen[rel] += 1
        if caption_col is not None:
            extra["image_id"] = image_key
        items.append(Item(key, rel, kind, table.parent / rel, label, caption, extra, group=image_key))
    return items, label_names


def list_shards(src: str) -> list[Item]:
    from mmssl.data.reader import read_segment
    from mmssl.data.shards import Segment, expand_pattern, is_remote

    if os.path.isdir(src):
        # Names from a folder listing are file names, never commands: absolute paths can't be `pipe:`.
        urls = sorted(os.path.abspath(p) for p in Path(src).glob("*.tar"))
    else:
        urls = expand_pattern(src)  # typed by the user: a pipe: or URL source is theirs to give
    if not urls:
        raise UsageError(f"no .tar shards in {src}")
    for u in urls:
        if not is_remote(u) and not os.path.exists(u):
            raise UsageError(f"shard not found: {u}")
    items: list[Item] = []
    used: set[str] = set()
    for url in urls:
        shard = shown(os.path.basename(url))

        def on_error(reason, detail, url=url, shard=shard):
            member = detail[len(url) + 2:] if detail.startswith(url + ": ") else detail
            where = shard if reason == "truncated_tar" else f"{shard}:{shown(member)}"
            items.append(Item(f"__damaged_{len(items)}", where, "damaged", None,
                              extra={"reason": f"{reason}: {shown(member)[-200:]}"}))

        for sample in read_segment(Segment(url, 0, 1 << 62), None, on_error):
            original = sample["__key__"]
            key = re.sub(r"[^A-Za-z0-9_-]+", "_", shown(original))
            extra = {}
            if key in used:  # the same key in two input tars, or two keys equal once cleaned
                key = f"{key}_{hashlib.sha1(f'{shard}:{original}'.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"
                extra["renamed_from"] = shown(original)
            used.add(key)
            items.append(Item(key, f"{shard}:{shown(original)}", "sample", sample, extra=extra))
    return items


# ---- encoding one input (runs in worker processes) ----------------------------------------------
class Skip(Exception):
    pass


def encode_image_bytes(data: bytes, ext: str, opts: dict) -> tuple[bytes, str, dict]:
    from PIL import Image

    from mmssl.data.image import ImageTooLarge, decode_image

    try:
        img = decode_image(data, max_pixels=opts.get("max_pixels"))
    except ImageTooLarge as exn:
        raise Skip(f"image too large: {exn}") from None
    except Exception as exn:  # noqa: BLE001 - Pillow raises many types for corrupt files
        detail = re.sub(r" <_io\.BytesIO object at 0x[0-9a-f]+>", "", str(exn))[:120]
        raise Skip(f"corrupt image: {detail}") from None
    fmt = opts.get("format")
    if opts.get("max_size") and max(img.size) > opts["max_size"]:
        img.thumbnail((opts["max_size"], opts["max_size"]), Image.BICUBIC)
        fmt = fmt or ("png" if ext == "png" else "jpg")
    if fmt:
        buf = io.BytesIO()
        img.save(buf, format={"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[fmt], quality=90)
        data, ext = buf.getvalue(), fmt
    return data, ext, {"width": img.size[0], "height": img.size[1]}


def encode_audio_file(path: Path, opts: dict) -> tuple[bytes, dict]:
    import numpy as np
    import soundfile
    import torch
    import torchaudio

    from mmssl.data.transcode import MediaError, decode_any_audio, encode_flac

    try:
        wave, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        wave = wave.mean(axis=1)
    except Exception:  # noqa: BLE001 - not a libsndfile format: let FFmpeg try
        try:
            wave, rate = decode_any_audio(path)
        except MediaError as exn:
            raise Skip(f"corrupt audio: {exn}") from None
    if wave.size == 0:
        raise Skip("corrupt audio: no samples")
    target = opts["sample_rate"]
    if rate != target:
        wave = torchaudio.functional.resample(torch.from_numpy(np.ascontiguousarray(wave)), rate, target).numpy()
    return encode_flac(wave, target), {"sample_rate": target, "duration": round(wave.size / target, 3)}


def encode_video_file(path: Path, opts: dict) -> list[tuple[bytes, dict]]:
    from mmssl.data.transcode import MediaError, probe_video, transcode_video

    normalise = any(opts.get(k) for k in ("max_seconds", "fps", "max_size", "clip_seconds"))
    try:
        if not normalise and ext_of(str(path)) == "mp4":
            info = probe_video(path)
            meta = {"duration": round(info.duration, 3), "fps": round(info.fps, 3), "width": info.width,
                    "height": info.height, "has_audio": info.has_audio}
            return [(path.read_bytes(), meta)]
        return transcode_video(path, max_seconds=opts.get("max_seconds"), fps=opts.get("fps"),
                               max_size=opts.get("max_size"), clip_seconds=opts.get("clip_seconds"))
    except MediaError as exn:
        raise Skip(f"corrupt video: {exn}") from None


def _base_members(item: Item) -> tuple[dict, dict]:
    members: dict[str, bytes] = {}
    meta = {"source": item.path, **item.extra}
    if item.label is not None:
        members["cls"] = str(item.label).encode()
    if item.caption is not None:
        caption = item.caption.strip()
        if not caption:
            raise Skip("empty caption")
        members["txt"] = caption.encode("utf-8")
    return members, meta


def encode_sample(item: Item, opts: dict) -> list[tuple[str, dict, dict]]:
    """Item -> [(key, members, stats)] (several for a video cut into clips)."""
    text_stats = {"text": {"chars": len(item.caption.strip())}} if item.caption else {}
    if item.kind == "sample":
        return [encode_shard_sample(item, opts)]
    if item.kind == "damaged":
        raise Skip(item.extra["reason"])
    if item.kind == "unknown":
        raise Skip(f"unsupported file type: .{ext_of(item.path)}")
    members, meta = _base_members(item)
    path = Path(item.src)
    if not path.is_file():
        raise Skip("unreadable path: no such file")
    if item.kind == "image":
        try:
            data = path.read_bytes()
        except OSError as exn:
            raise Skip(f"unreadable path: {exn.strerror}") from None
        data, ext, dims = encode_image_bytes(data, ext_of(path.name), opts)
        members[ext] = data
        meta.update(dims)
        return [(item.key, {**members, "json": json.dumps(meta).encode()}, {"image": dims, **text_stats})]
    if item.kind == "audio":
        flac, info = encode_audio_file(path, opts)
        meta.update(info)
        members["flac"] = flac
        return [(item.key, {**members, "json": json.dumps(meta).encode()}, {"audio": info, **text_stats})]
    clips = encode_video_file(path, opts)
    out = []
    many = bool(opts.get("clip_seconds"))
    for i, (mp4, info) in enumerate(clips):
        key = f"{item.key}_{i:03d}" if many else item.key
        clip_meta = {**meta, **info, **({"clip": i} if many else {})}
        out.append((key, {**members, "mp4": mp4, "json": json.dumps(clip_meta).encode()}, {"video": info, **text_stats}))
    return out


def encode_shard_sample(item: Item, opts: dict) -> tuple[str, dict, dict]:
    sample = item.src
    members = {k: v for k, v in sample.items() if not k.startswith("__")}
    unsafe = sorted(k for k in members if k.rsplit(".", 1)[-1] in UNSAFE_MEMBERS)
    for k in unsafe:
        del members[k]
    stats: dict = {}
    images = [k for k in members if k in IMAGE_EXTENSIONS]
    for k in images:
        members[k], _, dims = encode_image_bytes(members[k], k, {"max_pixels": opts.get("max_pixels")})
        stats["image"] = dims
    if "txt" in members:
        try:
            text = members["txt"].decode("utf-8").strip()
        except UnicodeDecodeError:
            raise Skip("bad caption: not UTF-8") from None
        if not text:
            raise Skip("empty caption")
        stats["text"] = {"chars": len(text)}
    if "json" in members:
        try:
            json.loads(members["json"])
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise Skip("bad json member") from None
    if "cls" in members:
        try:
            int(members["cls"].decode().strip())
        except (UnicodeDecodeError, ValueError):
            raise Skip("bad cls member") from None
    for k in [k for k in members if k in VIDEO_EXTENSIONS]:
        from mmssl.data.transcode import MediaError, probe_video

        try:
            info = probe_video(members[k])
        except MediaError as exn:
            raise Skip(f"corrupt video: {exn}") from None
        stats["video"] = {"duration": round(info.duration, 3), "fps": round(info.fps, 3), "has_audio": info.has_audio}
    if not (set(members) - {"json", "txt", "cls"}) and "txt" not in members:
        raise Skip(f"no usable members (dropped unsafe: {', '.join(unsafe) or 'none'})")
    return item.key, members, stats


def _worker_init():
    import torch

    torch.set_num_threads(1)


def _encode_job(job):
    item, opts = job
    try:
        return item, encode_sample(item, opts), None
    except Skip as exn:
        return item, [], str(exn)
    except Exception as exn:  # noqa: BLE001 - one bad input never stops the run; it is recorded
        return item, [], f"error: {type(exn).__name__}: {str(exn)[:160]}"


# ---- the command -----------------------------------------------------------------------------
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


def enumerate_inputs(args) -> tuple[list[Item], list[str]]:
    kinds = {**{e: "image" for e in IMAGE_EXTENSIONS if e != "jpeg"}, **{e: "video" for e in VIDEO_EXTENSIONS},
             **{e: "audio" for e in AUDIO_INPUTS}}
    src = Path(args.source)
    if args.command == "webdataset":
        return list_shards(args.source), []
    if not src.exists():
        raise UsageError(f"source not found: {src}")
    if args.command == "captions":
        return list_table(src, args.path_col, args.caption_col, kinds)
    kind = {"images": "image", "videos": "video", "audio": "audio"}[args.command]
    if src.is_file():
        only = {e: k for e, k in kinds.items() if k == kind}
        return list_table(src, args.path_col, getattr(args, "caption_col", None), only)
    exts = {"image": IMAGE_EXTENSIONS, "video": VIDEO_EXTENSIONS, "audio": AUDIO_INPUTS}[kind]
    return list_folder(src, tuple(e for e in exts if e != "jpeg") + (("jpeg",) if kind == "image" else ()), kind,
                       split_dirs=getattr(args, "split_dirs", False))


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
    from mmssl.data.shards import MANIFEST, SIZES
    from mmssl.data.writer import FORMAT, JOURNAL, written_files

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
    from mmssl.lock import FolderLock, FolderLocked

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

    from mmssl.data.writer import Journal, ShardWriter, write_manifest

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
    pool = Pool(args.workers, initializer=_worker_init) if args.workers > 1 else None
    results = pool.imap(_encode_job, jobs, chunksize=1) if pool else map(_encode_job, jobs)
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


if __name__ == "__main__":
    sys.exit(main())
