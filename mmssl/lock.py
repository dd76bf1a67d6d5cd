"""One writer per output folder: an exclusive, self-releasing lock on `FOLDER/.lock`.

The lock is a POSIX record lock (`fcntl.lockf`) on a file inside the folder, so the kernel releases
it when the holder dies, however it dies: a lock left by a dead process is simply taken over. Unlike
`flock`, it is not shared with forked children (data-loader and encoding workers), so a killed
writer's workers, which live on for a moment, do not keep its folder locked. The file records the
holder (pid, host, command, start time) only to name it in the refusal.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

LOCK_NAME = ".lock"


class FolderLocked(RuntimeError):
    """Another live process writes this folder; the message names it."""


class FolderLock:
    """`with FolderLock(folder, "make_shards"):` or `.acquire()` / `.release()`."""

    def __init__(self, folder: str | os.PathLike, what: str):
        self.folder, self.what = Path(folder), what
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exn:
            if exn.errno not in (errno.EACCES, errno.EAGAIN):
                os.close(fd)
                raise
            holder = _describe(os.pread(fd, 4096, 0))
            os.close(fd)
            raise FolderLocked(f"{self.folder} is being written by another {self.what} ({holder}); "
                               "wait for it to finish or stop it") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": " ".join(sys.argv)[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock; the file stays, naming the last holder
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _describe(raw: bytes) -> str:
    try:
        info = json.loads(raw.decode())
        return f"pid {info['pid']} on {info['host']} since {info['started']}: {info['command']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"
