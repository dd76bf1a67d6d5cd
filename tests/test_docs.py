"""The documentation's runnable blocks (fenced ```bash run / ```python run) run as written, on small
data: the README's "your own data" sequence on a real captions table, then docs/evaluation.md's
transformers-only CLIP embeddings on the run it made, checked against mmssl's own."""
from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

# Appended to recipe commands so a documented run of hundreds of steps takes seconds here.
SMALL_RUN = "max_steps=3 save_every=3 batch_size=4 image_size=32 num_workers=0 log_every=1 eval_every=0"
BLOCK = re.compile(r"^```(\w+) run\n(.*?)^```", re.M | re.S)


def runnable_blocks(page: Path) -> list[tuple[str, str]]:
    return BLOCK.findall(page.read_text())


def test_every_page_links_and_runnable_block_is_known():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        for target in re.findall(r"\]\(((?:docs/)?[\w/.-]+\.(?:md|png))\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
    found = {p.name: len(runnable_blocks(p)) for p in pages if runnable_blocks(p)}
    assert found == {"README.md": 1, "evaluation.md": 1, "semi_supervised.md": 1}  # each is run below


@pytest.mark.slow
def test_readme_own_data_then_transformers_only_clip(stamp_tree, tmp_path):
    table = tmp_path / "MY_CAPTIONS.csv"
    photos = sorted(p for p in stamp_tree.rglob("*.png") if p.name != "broken.png")
    with open(table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "caption"])
        for p in photos:
            w.writerow([str(p), p.stem.replace("_", " ")])
            w.writerow([str(p), f"a photo of a {p.stem.replace('_', ' ')}"])  # two captions per image
    photo = tmp_path / "photo.jpg"
    from PIL import Image

    Image.open(photos[0]).convert("RGB").save(photo)
    for name in ("tools", "recipes"):
        (tmp_path / name).symlink_to(ROOT / name)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1",
           "ACCELERATE_USE_CPU": "1"}
    [(lang, script)] = runnable_blocks(ROOT / "README.md")
    assert lang == "bash"
    outputs = []
    for line in script.strip().splitlines():
        line = line.replace("MY_CAPTIONS.csv", str(table)).replace("MY_PHOTO", str(photo))
        if "recipes/" in line:
            line += " " + SMALL_RUN
        proc = subprocess.run(line, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, f"{line}\n{proc.stderr[-3000:]}"
        outputs.append(proc.stdout)
    assert '"text_to_image_R@1"' in outputs[2] and outputs[3].strip() == "512 features"

    [(lang, code)] = runnable_blocks(ROOT / "docs" / "evaluation.md")
    code = code.replace('"RUN"', repr(str(tmp_path / "runs" / "mine"))).replace('"PHOTO"', repr(str(photo)))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = float(proc.stdout.split("cosine:")[1])

    import yaml

    from mmssl.data.image import decode_image, eval_transform
    from mmssl.eval.clip_model import load_clip_run

    run = tmp_path / "runs" / "mine"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    model = load_clip_run(run, cfg)
    image = model.image_embed(eval_transform(cfg["image_size"])(decode_image(photo.read_bytes())).unsqueeze(0))
    ours = (image @ model.text_embed(["a photo of a koala"]).T).item()
    # transformers' resize rounds some pixels one level of 255 away from Pillow's: close, not equal.
    assert abs(theirs - ours) < 1e-3, (theirs, ours)


@pytest.mark.slow
def test_semi_supervised_page_runs_as_written(tmp_path):
    """docs/semi_supervised.md's block, line by line from a fresh folder: the data tool at 40 train
    and 10 test images a class, the recipes for a few steps, then an evaluation of the saved run."""
    import json

    for name in ("tools", "recipes"):
        (tmp_path / name).symlink_to(ROOT / name)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    [(lang, script)] = runnable_blocks(ROOT / "docs" / "semi_supervised.md")
    outputs = []
    for line in script.strip().splitlines():
        if "build_fashion_mnist" in line:
            line += " --train-per-class 40 --test-per-class 10 --workers 1"
        if "recipes/" in line:
            line += " " + SMALL_RUN + " mu=2"
        proc = subprocess.run(line, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, f"{line}\n{proc.stderr[-3000:]}"
        outputs.append(proc.stdout)
    for run in ("fixmatch_demo", "pseudo_label_demo"):
        records = [json.loads(ln) for ln in (tmp_path / "runs" / run / "metrics.jsonl").read_text().splitlines()]
        assert any("mask_rate" in r for r in records) and (tmp_path / "runs" / run / "encoder" / "head.safetensors").exists()
    assert '"knn_top1@20"' in outputs[-1]


def test_every_results_table_in_the_docs_is_its_record():
    """docs/*.md's marked result blocks equal what benchmarks/docs_tables.py makes from the JSON
    records (the table, its command and commit): a figure cannot drift from the run that made it."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import docs_tables

    pages = {p.name: docs_tables.BLOCK.findall(p.read_text()) for p in (ROOT / "docs").glob("*.md")}
    assert {name for name, blocks in pages.items() if blocks} >= {"audio.md", "video.md"}
    for page in (ROOT / "docs").glob("*.md"):
        assert docs_tables.update(page)[1] == [], f"{page.name}: run python benchmarks/docs_tables.py"


def documented_commands() -> list[tuple[str, list[str]]]:
    """(page, argv) for every command line in a fenced block of the README and docs/*.md."""
    import shlex

    out = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for body in re.findall(r"^```[^\n]*\n(.*?)^```", page.read_text(), re.M | re.S):
            for line in body.replace("\\\n", " ").splitlines():
                line = re.sub(r"\s+#.*$", "", line.strip())
                if re.match(r"(python|accelerate|make)\s", line) and not line.startswith("python -c"):
                    out.append((page.name, shlex.split(line)))
    return out


def test_every_documented_command_names_what_exists_with_keys_its_recipe_takes():
    """Each command shown in the docs names a script, config, make target and flags that exist, and
    a recipe command's config file and key=value overrides merge under that recipe's own checks,
    so a renamed script or key cannot leave the docs behind. (The README's data sequence and the
    evaluation page's Python block also run: the tests above.)"""
    import runpy

    from mmssl.config import chosen, from_cli
    from mmssl.data.ingest import build_parser
    from mmssl.recipe_image import image_defaults

    commands = documented_commands()
    assert len(commands) >= 30
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    for page, argv in commands:
        where = f"{page}: {' '.join(argv)}"
        if argv[0] == "make":
            assert argv[1] in targets, where
            continue
        if argv[0] == "accelerate":  # launcher flags up to the script
            argv = ["python", *argv[next(i for i, a in enumerate(argv) if a.endswith(".py")):]]
        if argv[1:3] == ["-m", "mmssl.eval"]:
            source = (ROOT / "mmssl/eval/__main__.py").read_text()
            flags = [a for a in argv if a.startswith("--")]
            assert all(f'"{f}"' in source or f[2:].replace("-", "_") in source for f in flags), where
            continue
        script, args = ROOT / argv[1], argv[2:]
        assert script.exists(), where
        if script.parent.name == "recipes":
            config = args[args.index("--config") + 1] if "--config" in args else None
            assert config is None or (ROOT / config).exists(), where
            overrides = [a for a in args if "=" in a and not a.startswith("--")]
            argv_cfg = (["--config", str(ROOT / config)] if config else []) + overrides
            if script.stem == "image_ssl":
                defaults = image_defaults(chosen(argv_cfg, "objective", "simclr"))
            else:  # a recipe whose keys follow its method (fixmatch.py) has defaults(method)
                ns = runpy.run_path(str(script))
                defaults = ns["defaults"](chosen(argv_cfg, "objective", ns["COMMON"]["objective"].default)) \
                    if "defaults" in ns else ns["DEFAULTS"]
            from_cli(defaults, argv_cfg)
        elif script.name == "make_shards.py":
            build_parser().parse_args(args)
        else:  # tools and benchmarks: each flag is one the script defines
            source = script.read_text()
            assert all(f'"{a.split("=")[0]}"' in source for a in args if a.startswith("--")), where
