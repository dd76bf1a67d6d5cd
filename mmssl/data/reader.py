"""Read raw samples out of tar shards: no decoding, no unpickling, only the members asked for.

Members are grouped into samples by key (the member name up to the first dot of its basename), as
WebDataset does. Bytes of members whose suffix nobody asked for are never read into memory.
A shard that ends early (truncated download, disk error) yields the samples before the cut, then
stops; the damage is reported through `on_error` and the caller moves on to the next shard. So does
a member whose header declares more bytes than the shard holds: nothing is allocated for it.

Local shards are opened as files, never through `webdataset.gopen`: a shard's name comes from data
(a folder listing, a manifest) and is never read as a `pipe:` command or a URL. Only a source the
user typed is remote (`is_remote`), and only those go through `gopen`.
"""
from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import webdataset as wds


def is_remote(url: str) -> bool:
    """A source the user typed as a command or URL. Names read from data never reach this as such:
    they are joined to their folder as absolute paths (`shards.data_name`)."""
    return url.startswith(("pipe:", "http://", "https://", "gs://", "s3://"))


def split_member_name(name: str) -> tuple[str, str]:
    """'dir/abc.seg.jpg' -> ('dir/abc', 'seg.jpg'): the key ends at the first dot of the basename."""
    slash = name.rfind("/")
    dot = name.find(".", slash + 1)
    if dot < 0:
        return name, ""
    return name[:dot], name[dot + 1 :].lower()


@dataclass(frozen=True)
class Segment:
    """Samples [start, stop) of one shard, in the shard's own order."""

    url: str
    start: int
    stop: int


BLOCK = 512
CHUNK = 16 << 20  # a member is read in pieces of at most this size, so a hostile header cannot allocate
# Tar entry types that are not regular files: hard link, symlink, char/block device, fifo.
NON_REGULAR = {b"1": "hardlink", b"2": "symlink", b"3": "char device", b"4": "block device", b"6": "fifo"}


class TruncatedTar(Exception):
    """The tar ended inside a header or a member."""


def _remaining(stream) -> int | None:
    """Bytes left in a seekable stream, or None for pipes and sockets."""
    try:
        if not stream.seekable():
            return None
        pos = stream.tell()
        end = stream.seek(0, 2)
        stream.seek(pos)
        return end - pos
    except (AttributeError, OSError):
        return None


def _read_exact(stream, n: int) -> bytes:
    if n <= CHUNK:  # the common case: one read, nothing to guard
        data = stream.read(n)
        if len(data) < n:
            raise TruncatedTar(f"unexpected end of data ({len(data)} of {n} bytes)")
        return data
    left = _remaining(stream)  # a large member: is it really there, before anything is allocated?
    if left is not None and left < n:
        raise TruncatedTar(f"a member declares {n} bytes but only {left} remain")
    parts, got = [], 0
    while got < n:
        chunk = stream.read(min(n - got, CHUNK))
        if not chunk:
            raise TruncatedTar(f"unexpected end of data ({got} of {n} bytes)")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


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
    """A numeric header field: octal text, or GNU base-256 (first byte 0x80 or 0xff, as tarfile.nti)."""
    if field[:1] in (b"\x80", b"\xff"):
        value = int.from_bytes(field[1:], "big")
        return value - 256 ** (len(field) - 1) if field[0] == 0xFF else value
    field = field.rstrip(b"\0 ").lstrip(b" ")
    try:
        return int(field or b"0", 8)
    except ValueError:
        raise tarfile.HeaderError(f"bad number field {field[:12]!r}") from None


def iter_tar(stream, wanted, on_other=None) -> Iterator[tuple[str, bytes | None]]:
    """Yield (member name, bytes or None) for the regular files of a tar stream, in order.

    A small reader of the ustar/GNU/pax formats, much faster per member than `tarfile`'s stream
    mode; `wanted(name)` decides whether a member's bytes are read or skipped (seeked past).
    `on_other(name, what)` hears of members that are not regular files (links, devices, fifos);
    directories are not samples and pass silently.
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
        if size < 0:
            raise tarfile.HeaderError(f"negative member size {size}")
        if kind in (b"L", b"K", b"x", b"g"):
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
            if on_other is not None and kind in NON_REGULAR:
                on_other(name, NON_REGULAR[kind])
            # Links, devices, fifos and directories carry no data whatever their size field says
            # (as tarfile reads them); unknown types are skipped by their size.
            _skip(stream, 0 if kind in NON_REGULAR or kind == b"5" else padded)
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


def open_shard(url: str):
    """A binary stream of one shard: a local file, or `gopen` for a source the user typed as remote."""
    if is_remote(url):
        return wds.gopen(url, "rb")
    return open(url, "rb")


def read_segment(
    segment: Segment,
    extensions: set[str] | None,
    on_error: Callable[[str, str], None],
) -> Iterator[dict]:
    """Yield samples [start, stop) of one shard as `{"__key__", "__url__", ext: bytes, ...}`.

    The first `start` samples are skipped without reading their bytes. `extensions=None` keeps all.
    Members that cannot belong to a sample are reported through `on_error`, once each, by the
    reader of the segment they fall in: `non_regular_member` (links, devices, fifos) and
    `member_without_extension`.
    """
    index = -1
    current: dict | None = None
    state = {"index": -1, "key": None}

    def position(key: str) -> int:
        return state["index"] if key == state["key"] else state["index"] + 1

    def wanted(name: str) -> bool:
        key, ext = split_member_name(name)
        return position(key) >= segment.start and (extensions is None or ext in extensions)

    def stray(name: str, reason: str, what: str = "") -> None:
        if segment.start <= position(split_member_name(name)[0]) < segment.stop:
            on_error(reason, f"{segment.url}: {name}" + (f" ({what})" if what else ""))

    try:
        stream = open_shard(segment.url)
    except Exception as exn:  # noqa: BLE001 - any failure to open is reported, not raised
        on_error("unreadable_shard", f"{segment.url}: {exn}")
        return
    try:
        for name, data in iter_tar(stream, wanted, lambda n, what: stray(n, "non_regular_member", what)):
            key, ext = split_member_name(name)
            if key.startswith("__") or "/__" in key:
                continue  # WebDataset's __meta__ members
            if not ext:
                stray(name, "member_without_extension")
                continue
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
    except (TruncatedTar, tarfile.TarError, EOFError, OSError, ValueError, MemoryError) as exn:
        on_error("truncated_tar", f"{segment.url}: {exn}")
        # The partial sample at the cut still goes out: the fields report the members it lacks.
        if current is not None and segment.start <= index < segment.stop:
            yield current
    finally:
        stream.close()


def count_samples(url: str) -> int:
    """Samples `read_segment` yields from a whole local shard, from its headers alone."""
    return sum(1 for _ in read_segment(Segment(url, 0, 1 << 62), set(), lambda *a: None))
