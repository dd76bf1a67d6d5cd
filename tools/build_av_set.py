#!/usr/bin/env python
"""Build the audio-visual set: Tux Paint stamps that have a real sound, filmed with that sound.

    python tools/build_av_set.py [--out shards/av] [--size 64] [--train-motions 3]

About 135 stamps (Debian tuxpaint-stamps-default) ship a recorded sound (.ogg): animal calls,
vehicles, instruments. Each becomes 2-second mp4 clips (16 frames at 8 fps, camera motion as in
motion_clips.py) whose audio track is its sound at 16 kHz. Stamps, not clips, are split into train
(75%, `--train-motions` clips each, different motions) and test (one clip each), so test pairs
are unseen sounds and pictures, and each test sound belongs to exactly one test picture. The
stamp category (animals, vehicles, ...) is the label. Sharded by `make_shards.py videos
--split-dirs`.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from build_default_corpus import AUDIO_RATE, STAMPS, load_sound, stamp_pngs  # noqa: E402
from motion_clips import MOTIONS, render_and_shard, render_frames, write_clip  # noqa: E402


def render_job(job) -> None:
    png, motion, out, size = job
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".part")
        write_clip(tmp, render_frames(png, motion, size=size, frames=16), 8, load_sound(png.with_suffix(".ogg"), 2.0),
                   AUDIO_RATE)
        tmp.rename(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="shards/av")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--train-motions", type=int, default=3)
    p.add_argument("--stamps", type=int, default=0, help="use only the first N stamps with sounds (0: all)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--force", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    if (out / "manifest.json").exists() and not args.force:
        print(f"{out} exists (pass --force to rebuild)")
        return 0
    stamps = [png for png in stamp_pngs() if png.with_suffix(".ogg").exists()]
    stamps = stamps[: args.stamps] if args.stamps else stamps
    if not stamps:
        sys.exit(f"build_av_set.py: no stamps with sounds under {STAMPS}; install tuxpaint-stamps-default")
    raw = out.parent / ".raw" / out.name
    jobs = []
    for png in stamps:
        rel = png.relative_to(STAMPS)
        h = int(hashlib.sha1(rel.as_posix().encode()).hexdigest(), 16)
        split = "test" if (h % 100) < 25 else "train"
        first = h % len(MOTIONS)
        motions = [MOTIONS[(first + i) % len(MOTIONS)] for i in range(args.train_motions if split == "train" else 1)]
        name = rel.with_suffix("").as_posix().replace("/", "_")
        jobs += [(png, m, raw / split / rel.parts[0] / f"{name}_{m}.mp4", args.size) for m in motions]
    return render_and_shard(render_job, jobs, raw, out, args.workers, "rendering sound clips")


if __name__ == "__main__":
    sys.exit(main())
