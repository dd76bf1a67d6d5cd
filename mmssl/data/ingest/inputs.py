"""What make_shards reads: the inputs of a folder, a table or existing shards, as `Item`s with
stable keys, labels, captions and splits. Nothing here decodes media (see `encode.py`)."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..audio import AUDIO_EXTENSIONS
from ..image import IMAGE_EXTENSIONS
from ..video import VIDEO_EXTENSIONS

AUDIO_INPUTS = AUDIO_EXTENSIONS + ("m4a", "aac", "aiff", "aif")
DEFAULT_VAL_FRACTION = 0.1
# What each file extension is, for tables that mix media.
KIND_OF_EXTENSION = {**{e: "image" for e in IMAGE_EXTENSIONS if e != "jpeg"}, **{e: "video" for e in VIDEO_EXTENSIONS},
                     **{e: "audio" for e in AUDIO_INPUTS}}
# The commands that read one kind of media, and the file extensions a folder of it is listed by.
FOLDER_KINDS = {"images": ("image", tuple(e for e in IMAGE_EXTENSIONS if e != "jpeg") + ("jpeg",)),
                "videos": ("video", VIDEO_EXTENSIONS), "audio": ("audio", AUDIO_INPUTS)}


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
    from ..reader import Segment, is_remote, read_segment
    from ..shards import expand_pattern

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


def enumerate_inputs(args) -> tuple[list[Item], list[str]]:
    """The inputs `args.command` reads from `args.source`, and the label names."""
    src = Path(args.source)
    if args.command == "webdataset":
        return list_shards(args.source), []
    if not src.exists():
        raise UsageError(f"source not found: {src}")
    if args.command == "captions":
        return list_table(src, args.path_col, args.caption_col, KIND_OF_EXTENSION)
    kind, exts = FOLDER_KINDS[args.command]
    if src.is_file():
        only = {e: k for e, k in KIND_OF_EXTENSION.items() if k == kind}
        return list_table(src, args.path_col, getattr(args, "caption_col", None), only)
    return list_folder(src, exts, kind, split_dirs=getattr(args, "split_dirs", False))
