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
    try:
        stream = wds.gopen(segment.url, "rb")
    except Exception as exn:  # noqa: BLE001 - any failure to open is reported, not raised
        on_error("unreadable_shard", f"{segment.url}: {exn}")
        return
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for info in tar:
                if not info.isreg():
                    continue
                key, ext = split_member_name(info.name)
                if key.startswith("__") or not ext:
                    continue  # WebDataset's __meta__ members and stray files
                if current is None or key != current["__key__"]:
                    if current is not None and index >= segment.start:
                        yield current
                    index += 1
                    if index >= segment.stop:
                        return
                    current = {"__key__": key, "__url__": segment.url}
                if index < segment.start:
                    continue
                if extensions is None or ext in extensions:
                    current[ext] = tar.extractfile(info).read()
        if current is not None and segment.start <= index < segment.stop:
            yield current
    except (tarfile.TarError, EOFError, OSError, ValueError) as exn:
        on_error("truncated_tar", f"{segment.url}: {exn}")
        # The partial sample at the cut still goes out: the fields report the members it lacks.
        if current is not None and segment.start <= index < segment.stop:
            yield current
    finally:
        stream.close()
