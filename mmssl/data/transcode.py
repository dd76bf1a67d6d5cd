"""Media probing and re-encoding for `tools/make_shards.py` (PyAV; the `tools` extra).

Training never imports this: it decodes with decord and soundfile. Here we write what training
reads well: H.264 mp4 with AAC audio, and mono FLAC.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction

import numpy as np


class MediaError(Exception):
    """An input file that cannot be used; the message says why."""


@dataclass
class VideoInfo:
    duration: float
    fps: float
    width: int
    height: int
    has_audio: bool
    frames: int


def _open(src):
    import av

    try:
        return av.open(io.BytesIO(src) if isinstance(src, bytes) else str(src))
    except (av.error.FFmpegError, OSError, ValueError) as exn:
        raise MediaError(f"cannot open: {exn}") from None


def probe_video(src) -> VideoInfo:
    """Open a video (path or bytes), decode its first frame, and read its duration, fps and size."""
    import av

    with _open(src) as container:
        if not container.streams.video:
            raise MediaError("no video stream")
        vs = container.streams.video[0]
        try:
            first = next(container.decode(video=0))
        except (StopIteration, av.error.FFmpegError) as exn:
            raise MediaError(f"no decodable frame ({exn or 'empty'})") from None
        fps = float(vs.average_rate or vs.guessed_rate or 0) or 25.0
        if container.duration:
            duration = container.duration / 1e6
        elif vs.duration and vs.time_base:
            duration = float(vs.duration * vs.time_base)
        else:
            duration = (vs.frames or 0) / fps
        frames = vs.frames or int(round(duration * fps))
        return VideoInfo(duration, fps, first.width, first.height, bool(container.streams.audio), frames)


def _even(x: float) -> int:
    return max(2, int(round(x / 2)) * 2)


class Mp4Writer:
    """One mp4 being written in memory: H.264 video and, with `audio_rate`, AAC audio.

    Feed it `av.VideoFrame`s and `av.AudioFrame`s in time order, then `close()` for the bytes.
    """

    def __init__(self, width, height, fps, audio_rate, audio_layout):
        import av

        self.buf = io.BytesIO()
        self.out = av.open(self.buf, "w", format="mp4")
        self.rate = Fraction(fps).limit_denominator(1001)
        self.v = self.out.add_stream("libx264", rate=self.rate)
        self.v.width, self.v.height, self.v.pix_fmt = width, height, "yuv420p"
        self.v.options = {"crf": "23", "preset": "veryfast"}
        self.n_video = 0
        self.a = None
        if audio_rate:
            self.a = self.out.add_stream("aac", rate=audio_rate)
            self.a.layout = audio_layout
            self.resampler = av.AudioResampler(format="fltp", layout=audio_layout, rate=audio_rate,
                                               frame_size=self.a.codec_context.frame_size or 1024)
            self.n_audio = 0

    def add_video(self, frame):
        frame = frame.reformat(width=self.v.width, height=self.v.height, format="yuv420p")
        frame.pts, frame.time_base = self.n_video, 1 / self.rate
        self.out.mux(self.v.encode(frame))
        self.n_video += 1

    def add_audio(self, frame):
        if self.a is None:
            return
        frame.pts = None
        for f in self.resampler.resample(frame):
            f.pts = self.n_audio
            self.n_audio += f.samples
            self.out.mux(self.a.encode(f))

    def close(self) -> bytes:
        self.out.mux(self.v.encode())
        if self.a is not None:
            for f in self.resampler.resample(None):
                f.pts = self.n_audio
                self.n_audio += f.samples
                self.out.mux(self.a.encode(f))
            self.out.mux(self.a.encode())
        self.out.close()
        return self.buf.getvalue()


def transcode_video(src, *, max_seconds=None, fps=None, max_size=None, clip_seconds=None) -> list[tuple[bytes, dict]]:
    """Re-encode a video to H.264/AAC mp4, in one decoding pass.

    `max_seconds` keeps the start, `fps` resamples frames by timestamp, `max_size` bounds the longer
    side, and `clip_seconds` cuts consecutive clips (a final clip shorter than half a clip is
    dropped). Returns `[(mp4 bytes, {duration, fps, width, height, has_audio, start})]`.
    """
    import av

    info = probe_video(src)
    out_fps = float(fps or info.fps)
    scale = min(1.0, max_size / max(info.width, info.height)) if max_size else 1.0
    width, height = _even(info.width * scale), _even(info.height * scale)
    limit = min(info.duration, max_seconds) if max_seconds else info.duration
    clip = clip_seconds or limit or 1e9
    results: list[tuple[bytes, dict]] = []
    with _open(src) as container:
        streams = [container.streams.video[0]]
        audio_rate, layout = None, "mono"
        if container.streams.audio:
            a = container.streams.audio[0]
            streams.append(a)
            audio_rate = a.codec_context.sample_rate or 44100
            layout = "stereo" if (a.codec_context.channels or 1) >= 2 else "mono"
        writers: dict[int, Mp4Writer] = {}
        next_t = 0.0

        def writer(i):
            if i not in writers:
                writers[i] = Mp4Writer(width, height, out_fps, audio_rate, layout)
            return writers[i]

        bad_packets = 0
        for packet in container.demux(*streams):
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                bad_packets += 1  # a damaged packet loses its frames, not the whole file
                continue
            for frame in frames:
                t = frame.time
                if t is None or t < 0 or t >= limit:
                    continue
                i = int(t // clip)
                if isinstance(frame, av.VideoFrame):
                    if t + 1e-6 < next_t:
                        continue  # fps down-sampling: keep frames on the output time grid
                    next_t = (int(t * out_fps + 1e-6) + 1) / out_fps
                    writer(i).add_video(frame)
                else:
                    writer(i).add_audio(frame)
        for i in sorted(writers):
            w = writers[i]
            start = i * clip
            length = min(clip, limit - start)
            if w.n_video == 0 or (clip_seconds and length < clip / 2):
                w.out.close()
                continue
            meta = {"duration": round(w.n_video / out_fps, 3), "fps": out_fps, "width": width,
                    "height": height, "has_audio": w.a is not None and w.n_audio > 0, "start": round(start, 3)}
            if bad_packets:
                meta["bad_packets"] = bad_packets
            results.append((w.close(), meta))
    if not results:
        raise MediaError("no frames in the requested range")
    return results


def decode_any_audio(src) -> tuple[np.ndarray, int]:
    """Any audio file PyAV reads (path or bytes) -> (mono float32 [samples], rate)."""
    import av

    with _open(src) as container:
        if not container.streams.audio:
            raise MediaError("no audio stream")
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        chunks = []
        try:
            for frame in container.decode(audio=0):
                for f in resampler.resample(frame):
                    chunks.append(f.to_ndarray().reshape(-1))
        except av.error.FFmpegError as exn:
            raise MediaError(f"decode failed: {exn}") from None
    if not chunks:
        raise MediaError("no audio samples")
    return np.concatenate(chunks).astype(np.float32), rate


def encode_flac(wave: np.ndarray, rate: int) -> bytes:
    """Mono float32 [samples] -> 16-bit FLAC bytes."""
    import soundfile

    buf = io.BytesIO()
    soundfile.write(buf, np.clip(wave, -1.0, 1.0), rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()
