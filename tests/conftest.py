"""Shared fixtures: small corpora built at test time from real files that Debian packages install.

`make test` installs the packages (tuxpaint-stamps-default, opencv-doc). Without them these
fixtures fail with the command to run, rather than skipping the tests that need real data.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    # Parallel test processes (make test): each takes its share of the cores, and so do the
    # recipes and tools it starts, rather than every one spinning a thread on every core.
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(_threads))
    import torch

    torch.set_num_threads(_threads)

STAMPS = Path("/usr/share/tuxpaint/stamps")
OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")


def require(path: Path, package: str) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make test` (it installs the Debian package {package})")
    return path


def train_steps(model, loader, steps: int, **adamw) -> None:
    """`steps` AdamW updates of `model` on `loader`'s endless stream (the pretext learning tests)."""
    import itertools

    import torch

    opt = torch.optim.AdamW(model.parameters(), **adamw)
    for batch in itertools.islice(loader.forever(), steps):
        loss = model(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()


def make_shards(*args, check=True) -> subprocess.CompletedProcess:
    """Run tools/make_shards.py as users do, in a subprocess."""
    cmd = [sys.executable, str(ROOT / "tools" / "make_shards.py"), *map(str, args), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"make_shards failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc


# The data tools at test size: what the fixtures below add to the command the docs show
# (tests/test_docs.py runs the docs' blocks on these fixtures).
SMALL_TOOL = {"build_fashion_mnist.py": ["--train-per-class", "40", "--test-per-class", "10", "--workers", "1"],
              "build_motion_set.py": ["--photos", "24", "--size", "64", "--workers", "2"],
              "build_av_set.py": ["--stamps", "40", "--size", "32", "--train-motions", "2"],
              "build_speech_set.py": ["--speeds", "165"],
              "build_emoji_set.py": ["--size", "32", "--workers", "1"]}


def run_tool(script: str, *args) -> None:
    """Run tools/<script> as users do; fail with its stderr."""
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / script), *map(str, args)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def recipe_defaults(script: str, argv: list[str]) -> dict:
    """The config keys recipes/<script> offers for this command line: the image driver's and
    fixmatch.py's follow the method the command line chooses (`objective`)."""
    import runpy

    from mmssl.config import chosen

    if script == "image_ssl.py":
        from mmssl.recipe_image import image_defaults

        return image_defaults(chosen(argv, "objective", "simclr"))
    ns = runpy.run_path(str(ROOT / "recipes" / script))
    if "defaults" in ns:
        return ns["defaults"](chosen(argv, "objective", ns["COMMON"]["objective"].default))
    return ns["DEFAULTS"]


@pytest.fixture(scope="session")
def stamp_tree(tmp_path_factory) -> Path:
    """Real photos in 3 class folders (12 each), plus one corrupt png and one truncated jpg."""
    require(STAMPS, "tuxpaint-stamps-default")
    root = tmp_path_factory.mktemp("stamps")
    for cls in ("animals", "food", "vehicles"):
        pngs = sorted((STAMPS / cls).rglob("*.png"))[:12]
        (root / cls).mkdir()
        for p in pngs:
            shutil.copy(p, root / cls / p.name)
            txt = p.with_suffix(".txt")
            if txt.exists():
                shutil.copy(txt, root / cls / txt.name)
    (root / "animals" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png")
    from PIL import Image

    img = Image.open(sorted((root / "food").glob("*.png"))[0]).convert("RGB")
    img.save(root / "food" / "cut.jpg", quality=90)
    data = (root / "food" / "cut.jpg").read_bytes()
    (root / "food" / "cut.jpg").write_bytes(data[: len(data) // 3])
    return root


@pytest.fixture(scope="session")
def image_shards(stamp_tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("image_shards") / "out"
    make_shards("images", stamp_tree, out, "--samples-per-shard", "5", "--val-fraction", "0.2")
    return out


@pytest.fixture(scope="session")
def sounds(tmp_path_factory) -> list[Path]:
    """Six real animal sounds (ogg) from Tux Paint."""
    require(STAMPS, "tuxpaint-stamps-default")
    oggs = sorted(p for p in (STAMPS / "animals").rglob("*.ogg") if "_desc" not in p.name)
    return oggs[:6]


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory, stamp_tree, sounds) -> Path:
    """Motion clips with real sounds in two class folders, a real avi without audio, and a corrupt mp4."""
    import soundfile

    from motion_clips import render_frames, write_clip

    root = tmp_path_factory.mktemp("videos")
    pngs = sorted((STAMPS / "animals").rglob("*.png"))
    for i, motion in enumerate(("pan_left", "zoom_in")):
        (root / motion).mkdir()
        for j in range(3):
            wave, rate = soundfile.read(str(sounds[i * 3 + j]), dtype="float32", always_2d=True)
            frames = render_frames(pngs[i * 3 + j], motion, size=64, frames=12)
            write_clip(root / motion / f"clip{j}.mp4", frames, 6, wave.mean(1)[: rate * 2], rate)
    require(OPENCV_DATA, "opencv-doc")
    os.symlink(OPENCV_DATA / "vtest.avi", root / "vtest.avi")
    (root / "pan_left" / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    return root


@pytest.fixture(scope="session")
def jpeg_shards(stamp_tree, tmp_path_factory) -> Path:
    """The photos re-encoded as JPEG by make_shards (`--format jpg`), as a user's JPEG corpus."""
    out = tmp_path_factory.mktemp("jpeg_shards") / "out"
    make_shards("images", stamp_tree, out, "--format", "jpg", "--samples-per-shard", "8", "--val-fraction", "0")
    return out


@pytest.fixture(scope="session")
def caption_shards(stamp_tree, tmp_path_factory) -> Path:
    """The stamp photos with their English captions and category labels, 25% held out as val."""
    import csv

    table = stamp_tree / "captions.csv"
    with open(table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "caption", "label"])
        for png in sorted(stamp_tree.rglob("*.png")):
            txt = png.with_suffix(".txt")
            if txt.exists() and png.name != "broken.png":
                w.writerow([png.relative_to(stamp_tree).as_posix(), txt.read_text().splitlines()[0],
                            png.parent.name])
    out = tmp_path_factory.mktemp("caption_shards") / "out"
    make_shards("captions", table, out, "--val-fraction", "0.25", "--samples-per-shard", "8")
    return out


@pytest.fixture(scope="session")
def fashion_shards(tmp_path_factory) -> Path:
    """Real Fashion-MNIST (Debian dataset-fashion-mnist): 40 train and 10 test images per class,
    built as users do (tools/build_fashion_mnist.py -> make_shards.py images --split-dirs)."""
    require(Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"), "dataset-fashion-mnist")
    out = tmp_path_factory.mktemp("fashion") / "fashion_mnist"
    run_tool("build_fashion_mnist.py", "--out", out, *SMALL_TOOL["build_fashion_mnist.py"])
    return out


@pytest.fixture(scope="session")
def simclr_run(fashion_shards, tmp_path_factory):
    """A real SimCLR run on the Fashion-MNIST fixture (a few steps: its encoder is what is loaded)."""
    run = tmp_path_factory.mktemp("ft") / "simclr"
    subprocess.run([sys.executable, str(ROOT / "recipes/image_ssl.py"), "--config", str(ROOT / "recipes/configs/simclr_demo.yaml"),
                    f"output_dir={run}", f"data.train={fashion_shards}", f"data.val={fashion_shards}", "max_steps=3",
                    "batch_size=16", "num_workers=0", "tensorboard=false", "eval_tasks=[]"],
                   check=True, capture_output=True, cwd=ROOT)
    return run


@pytest.fixture(scope="session")
def motion_shards(tmp_path_factory) -> Path:
    """The camera-motion video set at test size: 24 real photos x 6 motions, 16 frames of 64 px,
    split by photo (tools/build_motion_set.py -> make_shards.py videos --split-dirs)."""
    require(STAMPS, "tuxpaint-stamps-default")
    out = tmp_path_factory.mktemp("motion") / "motion"
    run_tool("build_motion_set.py", "--out", out, *SMALL_TOOL["build_motion_set.py"])
    return out


@pytest.fixture(scope="session")
def motion_shards_all_photos(tmp_path_factory) -> Path:
    """The camera-motion set with all 240 photos (at 64 px): what a held-out generalisation test
    needs, where the 24-photo set only lets a model memorise its training photos."""
    require(STAMPS, "tuxpaint-stamps-default")
    out = tmp_path_factory.mktemp("motion_all") / "motion"
    run_tool("build_motion_set.py", "--out", out, "--size", "64", "--workers", "2")
    return out


@pytest.fixture(scope="session")
def av_shards(tmp_path_factory) -> Path:
    """The audio-visual set at test size: 40 real stamp photos with their real sounds, as 2-s mp4s
    (tools/build_av_set.py -> make_shards.py videos --split-dirs)."""
    require(STAMPS, "tuxpaint-stamps-default")
    out = tmp_path_factory.mktemp("av") / "av"
    run_tool("build_av_set.py", "--out", out, *SMALL_TOOL["build_av_set.py"])
    return out


@pytest.fixture(scope="session")
def speech_shards(tmp_path_factory) -> Path:
    """The speech sets (espeak-ng voices and the Asterisk speaker), one speed: a folder holding
    speech_speakers/ and speech_digits/ (tools/build_speech_set.py)."""
    require(Path("/usr/share/asterisk/sounds/en/digits"), "asterisk-core-sounds-en-wav")
    out = tmp_path_factory.mktemp("speech")
    run_tool("build_speech_set.py", "--out", out, *SMALL_TOOL["build_speech_set.py"])
    return out


@pytest.fixture(scope="session")
def emoji_shards(tmp_path_factory) -> Path:
    """The colour emoji set at 32 px (tools/build_emoji_set.py: Noto colour emoji by Unicode group)."""
    from build_emoji_set import EMOJI_TEST, FONT

    require(FONT, "fonts-noto-color-emoji")
    require(EMOJI_TEST, "unicode-data")
    out = tmp_path_factory.mktemp("emoji") / "emoji"
    run_tool("build_emoji_set.py", "--out", out, *SMALL_TOOL["build_emoji_set.py"])
    return out
