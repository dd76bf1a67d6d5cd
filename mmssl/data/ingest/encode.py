"""How make_shards encodes one input into shard members (runs in worker processes): images
re-encoded only when asked, audio to mono FLAC, video probed or transcoded, existing shard samples
validated. A bad input raises `Skip(reason)` and is listed, never fatal."""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

from ..image import IMAGE_EXTENSIONS
from ..video import VIDEO_EXTENSIONS
from .inputs import Item, ext_of

# Members that could execute code when loaded by a careless reader: never copied into our shards.
UNSAFE_MEMBERS = {"pyd", "pickle", "pkl", "pth", "pt", "joblib", "npy", "npz"}


class Skip(Exception):
    pass


def encode_image_bytes(data: bytes, ext: str, opts: dict) -> tuple[bytes, str, dict]:
    from PIL import Image

    from ..image import ImageTooLarge, decode_image

    try:
        img = decode_image(data, max_pixels=opts.get("max_pixels"))
    except ImageTooLarge as exn:
        raise Skip(f"image too large: {exn}") from None
    except Exception as exn:  # noqa: BLE001 - Pillow raises many types for corrupt files
        detail = re.sub(r" <_io\.BytesIO object at 0x[0-9a-f]+>", "", str(exn))[:120]
        raise Skip(f"corrupt image: {detail}") from None
    fmt = opts.get("format")
    if opts.get("max_size") and max(img.size) > opts["max_size"]:
        img.thumbnail((opts["max_size"], opts["max_size"]), Image.BICUBIC)
        fmt = fmt or ("png" if ext == "png" else "jpg")
    if fmt:
        buf = io.BytesIO()
        img.save(buf, format={"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[fmt], quality=90)
        data, ext = buf.getvalue(), fmt
    return data, ext, {"width": img.size[0], "height": img.size[1]}


def encode_audio_file(path: Path, opts: dict) -> tuple[bytes, dict]:
    import numpy as np
    import soundfile
    import torch
    import torchaudio

    from ..transcode import MediaError, decode_any_audio, encode_flac

    try:
        wave, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        wave = wave.mean(axis=1)
    except Exception:  # noqa: BLE001 - not a libsndfile format: let FFmpeg try
        try:
            wave, rate = decode_any_audio(path)
        except MediaError as exn:
            raise Skip(f"corrupt audio: {exn}") from None
    if wave.size == 0:
        raise Skip("corrupt audio: no samples")
    target = opts["sample_rate"]
    if rate != target:
        wave = torchaudio.functional.resample(torch.from_numpy(np.ascontiguousarray(wave)), rate, target).numpy()
    return encode_flac(wave, target), {"sample_rate": target, "duration": round(wave.size / target, 3)}


def encode_video_file(path: Path, opts: dict) -> list[tuple[bytes, dict]]:
    from ..transcode import MediaError, probe_video, transcode_video

    normalise = any(opts.get(k) for k in ("max_seconds", "fps", "max_size", "clip_seconds"))
    try:
        if not normalise and ext_of(str(path)) == "mp4":
            info = probe_video(path)
            meta = {"duration": round(info.duration, 3), "fps": round(info.fps, 3), "width": info.width,
                    "height": info.height, "has_audio": info.has_audio}
            return [(path.read_bytes(), meta)]
        return transcode_video(path, max_seconds=opts.get("max_seconds"), fps=opts.get("fps"),
                               max_size=opts.get("max_size"), clip_seconds=opts.get("clip_seconds"))
    except MediaError as exn:
        raise Skip(f"corrupt video: {exn}") from None


def _base_members(item: Item) -> tuple[dict, dict]:
    members: dict[str, bytes] = {}
    meta = {"source": item.path, **item.extra}
    if item.label is not None:
        members["cls"] = str(item.label).encode()
    if item.caption is not None:
        caption = item.caption.strip()
        if not caption:
            raise Skip("empty caption")
        members["txt"] = caption.encode("utf-8")
    return members, meta


def _image_sample(item: Item, path: Path, members: dict, meta: dict, opts: dict, text_stats: dict) -> list:
    try:
        data = path.read_bytes()
    except OSError as exn:
        raise Skip(f"unreadable path: {exn.strerror}") from None
    data, ext, dims = encode_image_bytes(data, ext_of(path.name), opts)
    members[ext] = data
    meta.update(dims)
    return [(item.key, {**members, "json": json.dumps(meta).encode()}, {"image": dims, **text_stats})]


def _audio_sample(item: Item, path: Path, members: dict, meta: dict, opts: dict, text_stats: dict) -> list:
    flac, info = encode_audio_file(path, opts)
    meta.update(info)
    members["flac"] = flac
    return [(item.key, {**members, "json": json.dumps(meta).encode()}, {"audio": info, **text_stats})]


def _video_samples(item: Item, path: Path, members: dict, meta: dict, opts: dict, text_stats: dict) -> list:
    out = []
    many = bool(opts.get("clip_seconds"))
    for i, (mp4, info) in enumerate(encode_video_file(path, opts)):
        key = f"{item.key}_{i:03d}" if many else item.key
        clip_meta = {**meta, **info, **({"clip": i} if many else {})}
        out.append((key, {**members, "mp4": mp4, "json": json.dumps(clip_meta).encode()}, {"video": info, **text_stats}))
    return out


# How a file of each kind becomes samples: [(key, members, stats)] (a video cut into clips gives several).
ENCODERS = {"image": _image_sample, "audio": _audio_sample, "video": _video_samples}


def encode_sample(item: Item, opts: dict) -> list[tuple[str, dict, dict]]:
    """Item -> [(key, members, stats)] (several for a video cut into clips)."""
    if item.kind == "sample":
        return [encode_shard_sample(item, opts)]
    if item.kind == "damaged":
        raise Skip(item.extra["reason"])
    if item.kind not in ENCODERS:
        raise Skip(f"unsupported file type: .{ext_of(item.path)}")
    members, meta = _base_members(item)
    path = Path(item.src)
    if not path.is_file():
        raise Skip("unreadable path: no such file")
    text_stats = {"text": {"chars": len(item.caption.strip())}} if item.caption else {}
    return ENCODERS[item.kind](item, path, members, meta, opts, text_stats)


def encode_shard_sample(item: Item, opts: dict) -> tuple[str, dict, dict]:
    sample = item.src
    members = {k: v for k, v in sample.items() if not k.startswith("__")}
    unsafe = sorted(k for k in members if k.rsplit(".", 1)[-1] in UNSAFE_MEMBERS)
    for k in unsafe:
        del members[k]
    stats: dict = {}
    images = [k for k in members if k in IMAGE_EXTENSIONS]
    for k in images:
        members[k], _, dims = encode_image_bytes(members[k], k, {"max_pixels": opts.get("max_pixels")})
        stats["image"] = dims
    if "txt" in members:
        try:
            text = members["txt"].decode("utf-8").strip()
        except UnicodeDecodeError:
            raise Skip("bad caption: not UTF-8") from None
        if not text:
            raise Skip("empty caption")
        stats["text"] = {"chars": len(text)}
    if "json" in members:
        try:
            json.loads(members["json"])
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise Skip("bad json member") from None
    if "cls" in members:
        try:
            int(members["cls"].decode().strip())
        except (UnicodeDecodeError, ValueError):
            raise Skip("bad cls member") from None
    for k in [k for k in members if k in VIDEO_EXTENSIONS]:
        from ..transcode import MediaError, probe_video

        try:
            info = probe_video(members[k])
        except MediaError as exn:
            raise Skip(f"corrupt video: {exn}") from None
        stats["video"] = {"duration": round(info.duration, 3), "fps": round(info.fps, 3), "has_audio": info.has_audio}
    if not (set(members) - {"json", "txt", "cls"}) and "txt" not in members:
        raise Skip(f"no usable members (dropped unsafe: {', '.join(unsafe) or 'none'})")
    return item.key, members, stats


def worker_init():
    import torch

    torch.set_num_threads(1)


def encode_job(job):
    item, opts = job
    try:
        return item, encode_sample(item, opts), None
    except Skip as exn:
        return item, [], str(exn)
    except Exception as exn:  # noqa: BLE001 - one bad input never stops the run; it is recorded
        return item, [], f"error: {type(exn).__name__}: {str(exn)[:160]}"


