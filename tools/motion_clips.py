"""Render real photos into short mp4 clips by camera motion, with a real sound as the audio track.

The motion class (pan left/right/up/down, zoom in/out) can only be read from the frame order, so
these clips test what a video model learns about time. Used by `build_default_corpus.py`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

MOTIONS = ("pan_left", "pan_right", "pan_up", "pan_down", "zoom_in", "zoom_out")


def _window(motion: str, t: float, big: int, size: int) -> tuple[float, float, float]:
    """Top, left and side of the crop window at time t in [0, 1] on a `big x big` canvas."""
    travel = big - size
    centre = travel / 2
    if motion == "pan_left":  # the camera moves left: the window slides from right to left
        return centre, travel * (1 - t), size
    if motion == "pan_right":
        return centre, travel * t, size
    if motion == "pan_up":
        return travel * (1 - t), centre, size
    if motion == "pan_down":
        return travel * t, centre, size
    side = big - (big - size) * (t if motion == "zoom_in" else 1 - t)
    offset = (big - side) / 2
    return offset, offset, side


def render_frames(image_path: Path, motion: str, size=128, frames=16, travel=0.5) -> list[np.ndarray]:
    """uint8 `[H, W, 3]` frames of one camera move over the photo (composited on white)."""
    img = Image.open(image_path).convert("RGBA")
    big = int(round(size * (1 + travel)))
    scale = big / max(img.size)
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BICUBIC)
    canvas = Image.new("RGBA", (big, big), (255, 255, 255, 255))
    canvas.alpha_composite(img, ((big - img.width) // 2, (big - img.height) // 2))
    canvas = canvas.convert("RGB")
    out = []
    for i in range(frames):
        top, left, side = _window(motion, i / max(1, frames - 1), big, size)
        crop = canvas.resize((size, size), Image.BILINEAR, box=(left, top, left + side, top + side))
        out.append(np.asarray(crop))
    return out


def write_clip(path: Path, frames: list[np.ndarray], fps: float, audio: np.ndarray | None, audio_rate: int) -> None:
    """Frames (+ mono float32 audio) -> H.264/AAC mp4 at `path`."""
    import av

    from mmssl.data.transcode import Mp4Writer

    h, w = frames[0].shape[:2]
    writer = Mp4Writer(w, h, fps, audio_rate if audio is not None else None, "mono")
    for f in frames:
        writer.add_video(av.VideoFrame.from_ndarray(f, format="rgb24"))
    if audio is not None:
        chunk = 1024
        for start in range(0, len(audio), chunk):
            piece = np.ascontiguousarray(audio[start : start + chunk], dtype=np.float32).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(piece, format="flt", layout="mono")
            frame.sample_rate = audio_rate
            writer.add_audio(frame)
    path.write_bytes(writer.close())


def render_and_shard(render_job, jobs: list, raw: Path, out: Path, workers: int, desc: str) -> int:
    """Render `jobs` with `render_job` in `workers` processes (a progress bar), then shard the
    `raw/{split}/{class}/` tree into `out` with make_shards' `videos --split-dirs`. -> exit status."""
    import sys
    from multiprocessing import Pool

    from tqdm import tqdm

    from mmssl.data.ingest import main as make_shards

    with Pool(workers) as pool:
        for _ in tqdm(pool.imap_unordered(render_job, jobs), total=len(jobs), desc=desc, unit="clip", file=sys.stderr):
            pass
    return make_shards(["videos", str(raw), str(out), "--split-dirs", "--samples-per-shard", "256",
                        "--workers", str(workers), "--overwrite"])
