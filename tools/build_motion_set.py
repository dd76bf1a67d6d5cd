#!/usr/bin/env python
"""Build the camera-motion video set: real photos filmed by a virtual camera, labelled by its motion.

    python tools/build_motion_set.py [--out shards/motion] [--photos 240] [--size 96] [--frames 16]

Each Tux Paint stamp photo (Debian `tuxpaint-stamps-default`) is rendered once per motion: pan
left, right, up, down, zoom in, zoom out (`motion_clips.render_frames`). Every photo appears in
all six classes, so one frame says nothing about the class; only the frame order does. Photos,
not clips, are split into train and test (by a hash of the path), so no test photo is seen in
training. The clips go to OUT/../.raw/motion/{train,test}/<motion>/<photo>.mp4 and are sharded by
`make_shards.py videos --split-dirs`, the way users shard their own labelled videos.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from motion_clips import MOTIONS, render_and_shard, render_frames, write_clip  # noqa: E402

STAMPS = Path("/usr/share/tuxpaint/stamps")


def pick_photos(n: int) -> list[Path]:
    """n stamp photos spread evenly over the sorted list (every category is represented)."""
    photos = sorted(p for p in STAMPS.rglob("*.png") if not p.name.endswith(("_mirror.png", "_flip.png")))
    if not photos:
        raise SystemExit(f"build_motion_set.py: no stamp photos under {STAMPS}; install tuxpaint-stamps-default")
    step = max(1, len(photos) // n)
    return photos[::step][:n]


def split_of(photo: Path, test_fraction: float) -> str:
    h = int(hashlib.sha1(photo.relative_to(STAMPS).as_posix().encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if h < test_fraction else "train"


def render_job(job) -> str:
    photo, motion, out, size, frames, fps = job
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".part")
        write_clip(tmp, render_frames(photo, motion, size=size, frames=frames), fps, None, 16000)
        tmp.rename(out)
    return str(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="shards/motion")
    p.add_argument("--photos", type=int, default=240, help="photos; each gives one clip per motion")
    p.add_argument("--size", type=int, default=96, help="frame side in pixels")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--test-fraction", type=float, default=0.25)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--force", action="store_true", help="rebuild the shards even if OUT/manifest.json exists")
    args = p.parse_args(argv)
    out = Path(args.out)
    if (out / "manifest.json").exists() and not args.force:
        print(f"{out} exists (pass --force to rebuild)")
        return 0
    raw = out.parent / ".raw" / out.name
    photos = pick_photos(args.photos)
    jobs = []
    for photo in photos:
        name = photo.relative_to(STAMPS).with_suffix("").as_posix().replace("/", "_")
        split = split_of(photo, args.test_fraction)
        jobs += [(photo, m, raw / split / m / f"{name}.mp4", args.size, args.frames, args.fps) for m in MOTIONS]
    return render_and_shard(render_job, jobs, raw, out, args.workers, "rendering motion clips")


if __name__ == "__main__":
    sys.exit(main())
