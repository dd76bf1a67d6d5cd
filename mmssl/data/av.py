"""Audio-visual pairs from one video: a frame and the sound around the same moment.

`AVPairField` reads an mp4 member once: it picks a frame (at random in training, the middle one
otherwise), takes `audio.seconds` of the audio track centred on that frame's timestamp, and can
add a hard negative, `mel_other`: the window of the same track whose centre lies farthest from
that timestamp (L3-Net's "same video, different time"). It outputs `image [3, S, S]` and `mel`
(or `audio`). Bad input is skipped with a reason: `corrupt_video`, `no_audio_track`,
`silent_audio`, `short_audio` (see mmssl.data.audio and mmssl.data.video).

Image + sound pairs stored as separate members (`png` + `flac`) need no special field: an
`ImageField` and an `AudioField` in the same loader give the same batch keys.
"""
from __future__ import annotations

from PIL import Image

from .audio import AudioField
from .fields import SkipSample, member, randint
from .video import VIDEO_EXTENSIONS, open_video


class AVPairField:
    """mp4 member -> `image` (transformed frame) + `mel`/`audio` (+ `mel_other` with hard negatives).

    Args:
        transform: PIL image -> tensor (mmssl.data.train_transform / eval_transform).
        audio: an AudioField that says the rate, window length, log-mel and the skip thresholds.
        train: random frame; otherwise the middle frame.
        hard_negative: also return the farthest window of the same track as `<key>_other`.
    """

    extensions = VIDEO_EXTENSIONS

    def __init__(self, transform, audio: AudioField, train: bool = True, hard_negative: bool = False):
        self.transform, self.audio, self.train, self.hard_negative = transform, audio, train, hard_negative

    def decode(self, sample: dict) -> dict:
        key = sample["__key__"]
        data = member(sample, self.extensions, "video")
        wave = self.audio.load({"__key__": key, "mp4": data})  # no_audio_track / corrupt_audio
        self.audio.check(wave, key)
        try:
            vr = open_video(data)
            n, fps = len(vr), float(vr.get_avg_fps()) or 25.0
        except Exception as exn:  # decord raises DECORDError or RuntimeError for bad containers
            raise SkipSample("corrupt_video", f"{key}: {str(exn)[-200:]}") from None
        if n == 0:
            raise SkipSample("empty_video", key)
        index = randint(n) if self.train else n // 2
        try:
            frame = Image.fromarray(vr.get_batch([index]).asnumpy()[0])
        except Exception as exn:
            raise SkipSample("corrupt_video", f"{key}: {str(exn)[-200:]}") from None
        rate, length = self.audio.sample_rate, self.audio.length
        centre = int(index / fps * rate)
        out = {"image": self.transform(frame), self.audio.out_key: self.audio.window(wave, centre - length // 2)}
        if self.hard_negative:
            # The window centre farthest from this frame's moment: the start or the end of the track.
            far = 0 if centre > wave.numel() / 2 else wave.numel() - length
            out[f"{self.audio.out_key}_other"] = self.audio.window(wave, far)
        return out

