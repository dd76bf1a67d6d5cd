"""Read raw samples out of tar shards: no decoding, no unpickling, only the members asked for.

Members are grouped into samples by key (the member name up to the first dot of its basename), as
WebDataset does. Bytes of members whose suffix nobody asked for are never read into memory.
A shard that ends early (truncated download, disk error) yields the samples before the cut, then
stops; the damage is reported through `on_error` and the caller moves on to the next shard.
"""
from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterator

import webdataset as wds

from .shards import Segment, split_member_name


BLOCK = 512


class TruncatedTar(Exception):
    """The tar ended inside a header or a member."""


def _read_exact(stream, n: int) -> bytes:
    data = stream.read(n)
    if len(data) < n:
        raise TruncatedTar(f"unexpected end of data ({len(data)} of {n} bytes)")
    return data


def _skip(stream, n: int) -> None:
    if n <= 0:
        return
    if getattr(stream, "seekable", lambda: False)():
        stream.seek(n, 1)
        return
    while n > 0:
        chunk = stream.read(min(n, 1 << 20))
        if not chunk:
            raise TruncatedTar("unexpected end of data while skipping a member")
        n -= len(chunk)


def _octal(field: bytes) -> int:
    field = field.rstrip(b"\0 ").lstrip(b" ")
    if field and field[0] & 0x80:  # GNU base-256 for very large sizes
        return int.from_bytes(field, "big") & ~(0x80 << (8 * (len(field) - 1)))
    return int(field or b"0", 8)


def iter_tar(stream, wanted) -> Iterator[tuple[str, bytes | None]]:
    """Yield (member name, bytes or None) for the regular files of a tar stream, in order.

    A small reader of the ustar/GNU/pax formats, much faster per member than `tarfile`'s stream
    mode; `wanted(name)` decides whether a member's bytes are read or skipped (seeked past).
    """
    long_name = None
    pax: dict[str, str] = {}
    while True:
        header = stream.read(BLOCK)
        if not header or header == b"\0" * BLOCK:
            return  # end of archive (two zero blocks, or plain EOF after the last member)
        if len(header) < BLOCK:
            raise TruncatedTar("unexpected end of data in a header")
        stored = _octal(header[148:156])
        if stored != sum(header[:148]) + 256 + sum(header[156:]):
            raise tarfile.HeaderError("bad header checksum")
        size = int(pax.get("size", _octal(header[124:136])))
        kind = header[156:157]
        padded = (size + BLOCK - 1) // BLOCK * BLOCK
        if kind in (b"L", b"x", b"g"):
            data = _read_exact(stream, padded)[:size]
            if kind == b"L":
                long_name = data.rstrip(b"\0").decode("utf-8", "replace")
            elif kind == b"x":
                pax = _parse_pax(data)
            continue
        name = pax.get("path") or long_name
        if name is None:
            name = header[:100].rstrip(b"\0").decode("utf-8", "replace")
            if header[257:262] == b"ustar" and header[345:500].strip(b"\0"):
                name = header[345:500].rstrip(b"\0").decode("utf-8", "replace") + "/" + name
        long_name, pax = None, {}
        if kind not in (b"0", b"\0", b"7"):
            _skip(stream, padded)
            continue
        if wanted(name):
            data = _read_exact(stream, size)
            _skip(stream, padded - size)
            yield name, data
        else:
            _skip(stream, padded)
            yield name, None


def _parse_pax(data: bytes) -> dict[str, str]:
    out, pos = {}, 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        length = int(data[pos:space])
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        out[key.decode()] = value.decode("utf-8", "replace")
        pos += length
    return out


def read_segment(
    segment: Segment,
    extensions: set[str] | None,
    on_error: Callable[[str, str], None],
) -> Iterator[dict]:
    """Yield samples [start, stop) of one shard as `{"__key__", "__url__", ext: bytes, ...}`.

    The first `start` samples are skipped without reading their bytes. `extensions=None` keeps all.
    """
    index = -1
    current: dict | None = None
    state = {"index": -1, "key": None}

    def wanted(name: str) -> bool:
        key, ext = split_member_name(name)
        idx = state["index"] if key == state["key"] else state["index"] + 1
        return idx >= segment.start and (extensions is None or ext in extensions)

    try:
        stream = wds.gopen(segment.url, "rb")
    except Exception as exn:  # noqa: BLE001 - any failure to open is reported, not raised
        on_error("unreadable_shard", f"{segment.url}: {exn}")
        return
    try:
        for name, data in iter_tar(stream, wanted):
            key, ext = split_member_name(name)
            if key.startswith("__") or "/__" in key or not ext:
                continue  # WebDataset's __meta__ members and stray files
            if current is None or key != current["__key__"]:
                if current is not None and index >= segment.start:
                    yield current
                index += 1
                state["index"], state["key"] = index, key
                if index >= segment.stop:
                    return
                current = {"__key__": key, "__url__": segment.url}
            if index >= segment.start and data is not None:
                current[ext] = data
        if current is not None and segment.start <= index < segment.stop:
            yield current
    except (TruncatedTar, tarfile.TarError, EOFError, OSError, ValueError) as exn:
        on_error("truncated_tar", f"{segment.url}: {exn}")
        # The partial sample at the cut still goes out: the fields report the members it lacks.
        if current is not None and segment.start <= index < segment.stop:
            yield current
    finally:
        stream.close()
