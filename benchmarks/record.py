"""Write a benchmark's JSON record with what makes it reproducible: the command, the commit (and
whether the tree had uncommitted changes), the date and the cores it ran on."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_record(path: Path, **payload) -> None:
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    # Uncommitted changes to code (not to records or docs) mean the commit does not say what ran.
    dirty = git("status", "--porcelain", "--", "mmssl", "recipes", "tools", "benchmarks/*.py")
    record = {"command": " ".join(["python", os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
              "commit": git("rev-parse", "--short", "HEAD"), "dirty": bool(dirty),
              "date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(), **payload}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
