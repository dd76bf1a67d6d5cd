"""Writing shards safely: atomic shard files, a journal for `--resume`, the manifest and sizes.json.

Crash safety. A shard is written as `.NAME.tmp`, flushed to disk and renamed to `NAME` only when
complete, so no partial tar ever has a final name. After the rename, a line for it (its name,
count, bytes, sha256, sample keys and per-sample stats) is appended to `.journal.jsonl`. If the
process dies between the rename and the journal line, `--resume` scans that shard's keys and
adds the line. `--resume` then skips every input whose key is already in a shard, so the finished
output holds each valid input exactly once, whatever the moment of the kill.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import time
from collections import Counter
from pathlib import Path

from .shards import MANIFEST, SIZES, split_member_name

JOURNAL = ".journal.jsonl"
FORMAT = "mmssl-shards/1"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _tar_keys(path: Path) -> list[str]:
    keys: list[str] = []
    with tarfile.open(path, "r:") as tar:
        for m in tar:
            k = split_member_name(m.name)[0]
            if not keys or keys[-1] != k:
                keys.append(k)
    return keys


class ShardWriter:
    """Append samples (dicts of member suffix -> bytes) to `OUT/{split}-NNNNNN.tar` shards."""

    def __init__(self, out_dir: Path, split: str, journal, samples_per_shard=1000, max_shard_bytes=None, first_index=0):
        self.out_dir, self.split, self.journal = Path(out_dir), split, journal
        self.samples_per_shard, self.max_shard_bytes = samples_per_shard, max_shard_bytes
        self.index = first_index
        self._tar = None
        self._keys: list[str] = []
        self._stats: list[dict] = []
        self._items: list[str] = []
        self._bytes = 0

    def _open(self):
        self._tmp = self.out_dir / f".{self.split}-{self.index:06d}.tar.tmp"
        self._file = open(self._tmp, "wb")
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.USTAR_FORMAT)

    def write(self, key: str, members: dict[str, bytes], stats: dict, completes_item: str | None = None) -> None:
        """Add one sample. `completes_item` names the input whose last sample this is (for --resume)."""
        size = sum(len(v) for v in members.values())
        if self._tar is not None and self.max_shard_bytes and self._bytes + size > self.max_shard_bytes:
            self.flush()
        if self._tar is None:
            self._open()
        for ext in sorted(members):
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(members[ext]), 0, 0o444
            info.uname = info.gname = "mmssl"
            self._tar.addfile(info, io.BytesIO(members[ext]))
        self._keys.append(key)
        self._stats.append(stats)
        if completes_item is not None:
            self._items.append(completes_item)
        self._bytes += size
        if len(self._keys) >= self.samples_per_shard:
            self.flush()

    def abort(self) -> None:
        """Drop the open shard (after an error): its temporary file goes, nothing is renamed."""
        if self._tar is None:
            return
        for close in (self._tar.close, self._file.close):
            try:
                close()
            except OSError:
                pass  # the disk that failed the write may fail the close too
        self._tmp.unlink(missing_ok=True)
        self._tar, self._keys, self._stats, self._items, self._bytes = None, [], [], [], 0

    def flush(self) -> None:
        """Finish the open shard: close, fsync, rename to its final name, journal it."""
        if self._tar is None:
            return
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        final = self.out_dir / f"{self.split}-{self.index:06d}.tar"
        os.replace(self._tmp, final)
        self.journal.add_shard(self.split, final, self._keys, self._stats, self._items)
        self.index += 1
        self._tar, self._keys, self._stats, self._items, self._bytes = None, [], [], [], 0


class Journal:
    """The append-only record of finished shards and skipped inputs in one output folder."""

    def __init__(self, out_dir: Path, resume: bool):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / JOURNAL
        self.shards: dict[str, dict] = {}
        self.skipped: dict[str, str] = {}
        self.source: dict | None = None  # what the run was built from (make_shards' fingerprint)
        if resume:
            self._load()
        else:
            self.path.unlink(missing_ok=True)
        for stale in self.out_dir.glob(".*.tar.tmp"):
            stale.unlink()  # a shard that was being written when the last run died
        self._file = open(self.path, "a")

    def _load(self):
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the last line of a killed run may be cut short
                if rec.get("type") == "shard":
                    self.shards[rec["name"]] = rec
                elif rec.get("type") == "skip":
                    self.skipped[rec["path"]] = rec["reason"]
                elif rec.get("type") == "source":
                    self.source = rec
        # Shards renamed into place whose journal line was never written (killed in between).
        for tar_path in sorted(self.out_dir.glob("*-[0-9][0-9][0-9][0-9][0-9][0-9].tar")):
            if tar_path.name not in self.shards:
                split = tar_path.name.rsplit("-", 1)[0]
                try:
                    keys = _tar_keys(tar_path)
                except tarfile.TarError:
                    tar_path.unlink()
                    continue
                rec = self._record(split, tar_path, keys, [{} for _ in keys])
                rec["stats_lost"] = True
                self.shards[tar_path.name] = rec
                with open(self.path, "a") as f:
                    f.write(json.dumps(rec) + "\n")
        # Journal lines whose shard is gone (deleted by hand) no longer count.
        self.shards = {n: r for n, r in self.shards.items() if (self.out_dir / n).exists()}

    def _record(self, split, path: Path, keys, stats, items=()) -> dict:
        return {"type": "shard", "split": split, "name": path.name, "count": len(keys),
                "bytes": path.stat().st_size, "sha256": sha256_file(path), "keys": keys, "stats": stats,
                "items": list(items)}

    def add_shard(self, split, path: Path, keys, stats, items) -> None:
        rec = self._record(split, path, keys, stats, items)
        self.shards[path.name] = rec
        self._file.write(json.dumps(rec) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def set_source(self, source: dict) -> None:
        """Record what this folder is built from, once, so that --resume can refuse another source."""
        if self.source is None:
            self.source = source
            self._file.write(json.dumps(source) + "\n")
            self._file.flush()

    def add_skip(self, path: str, reason: str) -> None:
        if path in self.skipped:
            return
        self.skipped[path] = reason
        self._file.write(json.dumps({"type": "skip", "path": path, "reason": reason}) + "\n")
        self._file.flush()

    def done_keys(self) -> set[str]:
        return {k for rec in self.shards.values() for k in rec["keys"]}

    def next_index(self, split: str) -> int:
        idx = [int(n.rsplit("-", 1)[1][:6]) for n, r in self.shards.items() if r["split"] == split]
        return max(idx) + 1 if idx else 0

    def close(self):
        self._file.close()


def _summary(values: list[float]) -> dict:
    if not values:
        return {}
    return {"min": round(min(values), 3), "mean": round(sum(values) / len(values), 3), "max": round(max(values), 3)}


def modality_stats(stats: list[dict]) -> dict:
    """Per-modality statistics from the per-sample stats the encoders recorded."""
    out: dict[str, dict] = {}
    by_mod: dict[str, list[dict]] = {}
    for s in stats:
        for mod, values in s.items():
            by_mod.setdefault(mod, []).append(values)
    for mod, rows in by_mod.items():
        entry: dict = {"count": len(rows)}
        for field in sorted({f for r in rows for f in r}):
            vals = [r[field] for r in rows if isinstance(r.get(field), (int, float)) and not isinstance(r.get(field), bool)]
            flags = [r[field] for r in rows if isinstance(r.get(field), bool)]
            if vals:
                entry[field] = _summary(vals)
                if field in ("sample_rate", "fps"):
                    entry[field]["values"] = sorted(set(vals))[:10]
            elif flags:
                entry[field] = {"true": sum(flags), "false": len(flags) - sum(flags)}
        out[mod] = entry
    return out


def written_files(out_dir: Path) -> list[Path]:
    """Every file in `out_dir` that make_shards wrote there: the shards its journal or its own
    manifest lists, the manifest, sizes.json, the journal and unfinished `.tmp` shards."""
    out_dir = Path(out_dir)
    names: set[str] = set()
    journal = out_dir / JOURNAL
    if journal.exists():
        names.add(JOURNAL)
        for line in journal.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and rec.get("type") == "shard" and isinstance(rec.get("name"), str):
                names.add(rec["name"])
    try:
        manifest = json.loads((out_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        manifest = None
    if isinstance(manifest, dict) and manifest.get("format") == FORMAT:
        names.update({MANIFEST, SIZES})
        for entry in (manifest.get("splits") or {}).values():
            names.update(s["name"] for s in entry.get("shards", []) if isinstance(s.get("name"), str))
    files = [out_dir / n for n in sorted(names) if "/" not in n and n not in (".", "..")]
    return [p for p in files if p.is_file()] + sorted(out_dir.glob(".*.tar.tmp"))


def write_manifest(out_dir: Path, journal: Journal, labels: list[str], source: str, options: dict,
                   notes: dict | None = None) -> dict:
    """Write manifest.json and sizes.json from the journal (atomically), and return the manifest."""
    splits: dict[str, dict] = {}
    all_stats: list[dict] = []
    for name in sorted(journal.shards):
        rec = journal.shards[name]
        split = splits.setdefault(rec["split"], {"shards": [], "count": 0, "bytes": 0})
        split["shards"].append({k: rec[k] for k in ("name", "count", "bytes", "sha256")})
        split["count"] += rec["count"]
        split["bytes"] += rec["bytes"]
        all_stats.extend(s for s in rec["stats"] if s)
    for split, entry in splits.items():
        n = len(entry["shards"])
        entry["pattern"] = f"{split}-{{000000..{n - 1:06d}}}.tar"
    skipped = [{"path": p, "reason": r} for p, r in sorted(journal.skipped.items())]
    manifest = {
        "format": FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": source,
        "options": options,
        "splits": splits,
        "modalities": modality_stats(all_stats),
        "labels": labels,
        "skipped": skipped,
        "skipped_by_reason": dict(Counter(r.split(":")[0] for r in journal.skipped.values())),
        **({"notes": notes} if notes else {}),
    }
    sizes = {s["name"]: s["count"] for e in splits.values() for s in e["shards"]}
    for name, obj in ((MANIFEST, manifest), (SIZES, sizes)):
        tmp = Path(out_dir) / f".{name}.tmp"
        tmp.write_text(json.dumps(obj, indent=1))
        os.replace(tmp, Path(out_dir) / name)
    return manifest
