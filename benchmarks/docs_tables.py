#!/usr/bin/env python
"""Write the docs' generated blocks: each benchmark's table from its JSON record, so a documented
figure is the recorded one, and each table of config keys from the code that defines them.

    python benchmarks/docs_tables.py           # rewrite the marked blocks of docs/*.md
    python benchmarks/docs_tables.py --check   # exit 1 naming each block that differs from its source

A block is marked in a page as

    <!-- record: benchmarks/results/NAME.json -->          <!-- keys: mmssl.train.TRAIN_DEFAULTS -->
    ...                                                     ...
    <!-- end record -->                                     <!-- end keys -->

A record block becomes the record's `table`, then one line naming the command, commit and date that
made it; a keys block becomes a table of every key of that defaults dict: its default, its type or
allowed values, its help line (what `--help` prints). `<!-- methods: mmssl.recipe_image -->` becomes
the table of every image method the driver finds: its name, the paper its module links, the batch
it trains on and the first line of its module's docstring.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- (?P<kind>record|keys|methods): (?P<path>[\w/.-]+) -->\n)(?P<body>.*?)(<!-- end (?P=kind) -->)",
                   re.S)


def rendered(record_path: str) -> str:
    record = json.loads((ROOT / record_path).read_text())
    dirty = " (with uncommitted changes)" if record.get("dirty") else ""
    return (f"{record['table'].rstrip()}\n\n"
            f"Made by `{record['command']}` at commit {record['commit']}{dirty} on {record['date']} "
            f"({record['cores']} cores); record: `{record_path}`.\n")


def keys_table(dotted_name: str) -> str:
    """The markdown table of every key of the defaults dict `module.NAME`."""
    import importlib

    from mmssl.config import key_rows

    module, name = dotted_name.rsplit(".", 1)
    rows = key_rows(getattr(importlib.import_module(module), name))
    lines = ["| key | default | type or values | what it does |", "|---|---|---|---|"]
    def cell(text: str) -> str:
        return text.replace("|", "\\|")  # a pipe inside a cell would end it

    lines += [f"| `{k}` | `{cell(d)}` | {t.replace('|', ' or ')} | {cell(h)} |" for k, d, t, h in rows]
    return "\n".join(lines) + "\n"


def methods_table(module_name: str) -> str:
    """The markdown table of the image SSL methods of `module_name` (mmssl.recipe_image)."""
    import importlib

    driver = importlib.import_module(module_name)
    lines = ["| objective | paper | trains on | what it learns from |", "|---|---|---|---|"]
    for name in driver.image_objectives():
        cls = driver.objective_class(name)
        doc = sys.modules[cls.__module__].__doc__
        paper = re.search(r"https://arxiv\.org/abs/(\d+\.\d+)", doc)
        title, summary = doc.split("\n\n")[0].replace("\n", " ").split(": ", 1)
        views = driver.VIEWS[cls.views].__doc__.split(" (")[0].rstrip(".")
        link = f"[{paper[1]}]({paper[0]})" if paper else ""
        lines.append(f"| `{name}` | {title}, {link} | {views} | {summary} |")
    return "\n".join(lines) + "\n"


def update(page: Path) -> tuple[str, list[str]]:
    """-> (the page with every block filled from its record, the records whose block changed)."""
    text, changed = page.read_text(), []

    def fill(m: re.Match) -> str:
        body = {"record": rendered, "keys": keys_table, "methods": methods_table}[m["kind"]](m["path"])
        if body != m["body"]:
            changed.append(m["path"])
        return m.group(1) + body + m.group(5)

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
