#!/usr/bin/env python
"""Build mmssl's built-in default corpus from real data that Debian packages install offline.

    python tools/build_default_corpus.py [--out shards] [--workers 2] [--force]

It stages raw files and tables under OUT/.raw/, the way a user would lay out their own corpus,
then runs tools/make_shards.py on them:

- OUT/default_images: about 800 Tux Paint photos and cut-outs, each with its English caption (the
  first line of the stamp's .txt) and its category as the class; 10% held out as `val`.
- OUT/default_videos: video with audio. Each Tux Paint stamp that has a real sound becomes a
  2-second camera-motion clip (pan or zoom, the motion as its class) with that sound as the track,
  plus 2-second clips cut from real footage in opencv-doc (two with sound, two without).

Needs the Debian packages tuxpaint-stamps-default and opencv-doc (`make demo` installs them).
Running it again reuses finished corpora; `--force` rebuilds them.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from motion_clips import MOTIONS, render_frames, write_clip  # noqa: E402

STAMPS = Path("/usr/share/tuxpaint/stamps")
OPENCV = Path("/usr/share/doc/opencv-doc")
REAL_VIDEOS = {  # file under opencv-doc -> caption (what the footage shows)
    "opencv4/html/box.mp4.gz": "a hand holding a decorated box above a table",
    "opencv4/html/cup.mp4.gz": "a hand holding a black flask against a white wall",
    "examples/data/Megamind.avi": "an animated film scene of a woman in a restaurant",
    "examples/data/vtest.avi": "people walking on a campus path seen from above",
}
AUDIO_RATE = 16000


def caption_of(png: Path) -> str:
    """First line of the stamp's .txt ('A koala.'); empty when there is none (make_shards skips it)."""
    txt = png.with_suffix(".txt")
    if not txt.exists():
        return ""
    first = txt.read_text(encoding="utf-8", errors="replace").splitlines()
    return first[0].strip() if first else ""


def write_table(path: Path, rows: list[dict]) -> Path:
    """The CSV that make_shards.py `captions` reads: path (relative to the table), caption, label."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "caption", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def stamp_pngs() -> list[Path]:
    return sorted(p for p in STAMPS.rglob("*.png") if not p.name.endswith(("_mirror.png", "_flip.png")))


def stage_images(raw: Path) -> Path:
    """Symlink every stamp photo under raw/images/<category>/... and write raw/images.csv."""
    rows = []
    for png in stamp_pngs():
        rel = png.relative_to(STAMPS)
        link = raw / "images" / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(png)
        rows.append({"path": f"images/{rel.as_posix()}", "caption": caption_of(png), "label": rel.parts[0]})
    return write_table(raw / "images.csv", rows)


def load_sound(path: Path, seconds: float) -> np.ndarray:
    import soundfile
    import torch
    import torchaudio

    wave, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    wave = torch.from_numpy(wave.mean(axis=1))
    if rate != AUDIO_RATE:
        wave = torchaudio.functional.resample(wave, rate, AUDIO_RATE)
    return wave[: int(seconds * AUDIO_RATE)].numpy()


def stage_videos(raw: Path) -> Path:
    """Render stamp motion clips with their sounds, copy real footage, and write raw/videos.csv."""
    from tqdm import tqdm

    rows = []
    stamps = [p for p in stamp_pngs() if p.with_suffix(".ogg").exists()]
    for png in tqdm(stamps, desc="rendering motion clips", unit="clip", file=sys.stderr):
        rel = png.relative_to(STAMPS).with_suffix("")
        motion = MOTIONS[int(hashlib.sha1(rel.as_posix().encode()).hexdigest(), 16) % len(MOTIONS)]
        out = raw / "videos" / "stamps" / f"{rel.as_posix().replace('/', '_')}.mp4"
        out.parent.mkdir(parents=True, exist_ok=True)
        if not out.exists():
            frames = render_frames(png, motion, size=128, frames=16)
            write_clip(out, frames, fps=8, audio=load_sound(png.with_suffix(".ogg"), 2.0), audio_rate=AUDIO_RATE)
        rows.append({"path": out.relative_to(raw).as_posix(), "caption": caption_of(png), "label": motion})
    for name, caption in REAL_VIDEOS.items():
        src = OPENCV / name
        out = raw / "videos" / "real" / Path(name).name.removesuffix(".gz")
        out.parent.mkdir(parents=True, exist_ok=True)
        if not out.exists():
            if name.endswith(".gz"):
                with gzip.open(src) as f_in, open(out, "wb") as f_out:
                    shutil.copyfileobj(f_in, f_out)
            else:
                out.symlink_to(src)
        rows.append({"path": out.relative_to(raw).as_posix(), "caption": caption, "label": ""})
    return write_table(raw / "videos.csv", rows)


def make_shards(*args: str) -> None:
    from mmssl.data.ingest import main as make_shards_main

    print("$ tools/make_shards.py", " ".join(args), file=sys.stderr)
    if make_shards_main(list(args)) != 0:
        raise SystemExit(f"make_shards {args[0]} {args[1]} wrote nothing")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="shards", help="folder that receives default_images/ and default_videos/")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--force", action="store_true", help="rebuild corpora that are already complete")
    args = p.parse_args(argv)
    for need, package in ((STAMPS, "tuxpaint-stamps-default"), (OPENCV, "opencv-doc")):
        if not need.exists():
            print(f"build_default_corpus: error: {need} is missing; apt-get install {package}", file=sys.stderr)
            return 2
    out = Path(args.out)
    raw = out / ".raw" / "default"
    raw.mkdir(parents=True, exist_ok=True)
    common = ["--workers", str(args.workers), "--val-fraction", "0.1", "--seed", "0", "--overwrite"]
    if args.force or not (out / "default_images" / "manifest.json").exists():
        make_shards("captions", str(stage_images(raw)), str(out / "default_images"), "--samples-per-shard", "200",
                    "--max-size", "256", *common)
    if args.force or not (out / "default_videos" / "manifest.json").exists():
        make_shards("captions", str(stage_videos(raw)), str(out / "default_videos"), "--samples-per-shard", "64",
                    "--clip-seconds", "2", "--fps", "8", "--max-size", "160", *common)
    return 0


if __name__ == "__main__":
    sys.exit(main())
