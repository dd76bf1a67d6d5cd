#!/usr/bin/env python
"""Put each benchmark's table into the docs from its JSON record, so a documented figure is the
recorded one.

    python benchmarks/docs_tables.py           # rewrite the marked blocks of docs/*.md
    python benchmarks/docs_tables.py --check   # exit 1 naming each block that differs from its record

A block is marked in a page as

    <!-- record: benchmarks/results/NAME.json -->
    ...
    <!-- end record -->

and becomes the record's `table`, then one line naming the command, commit and date that made it.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- record: (?P<path>[\w/.-]+\.json) -->\n)(?P<body>.*?)(<!-- end record -->)", re.S)


def rendered(record_path: str) -> str:
    record = json.loads((ROOT / record_path).read_text())
    dirty = " (with uncommitted changes)" if record.get("dirty") else ""
    return (f"{record['table'].rstrip()}\n\n"
            f"Made by `{record['command']}` at commit {record['commit']}{dirty} on {record['date']} "
            f"({record['cores']} cores); record: `{record_path}`.\n")


def update(page: Path) -> tuple[str, list[str]]:
    """-> (the page with every block filled from its record, the records whose block changed)."""
    text, changed = page.read_text(), []

    def fill(m: re.Match) -> str:
        body = rendered(m["path"])
        if body != m["body"]:
            changed.append(m["path"])
        return m.group(1) + body + m.group(4)

    return BLOCK.sub(fill, text), changed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block differs from its record")
    args = p.parse_args(argv)
    stale = []
    for page in sorted((ROOT / "docs").glob("*.md")):
        text, changed = update(page)
        stale += [f"{page.relative_to(ROOT)}: {path}" for path in changed]
        if changed and not args.check:
            page.write_text(text)
    for line in stale:
        print(("differs from its record: " if args.check else "updated: ") + line)
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
