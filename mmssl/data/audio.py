"""Audio: soundfile decode (or the audio track of an mp4 via decord), resample, crop/pad, log-mel.

Output `audio [samples]` at `sample_rate`, or with `n_mels` set, `mel [1, n_mels, frames]`.
Bad input is skipped with a reason: `corrupt_audio`, `no_audio_track` (an mp4 without sound),
`silent_audio` (peak below `silence_peak`), `short_audio` (shorter than `min_seconds`).
Clips longer than `seconds` are cropped (random start in training, centre otherwise); shorter ones
are zero-padded at the end. With `trim_db`, leading and trailing silence (10 ms frames more than
`trim_db` below the loudest frame) is cut first, so a window starts at the sound. Waveform output
also carries `audio_samples`, the number of real samples before the padding.
"""
from __future__ import annotations

import io

import numpy as np
import soundfile
import torch
import torchaudio

from .fields import SkipSample, member, randint

AUDIO_EXTENSIONS = ("flac", "wav", "ogg", "mp3", "opus")


def decode_audio(data: bytes) -> tuple[np.ndarray, int]:
    """Bytes of wav/flac/ogg/mp3/opus -> (mono float32 [samples], sample rate)."""
    wave, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return wave.mean(axis=1), rate


def decode_video_audio(data: bytes, sample_rate: int) -> np.ndarray:
    """The audio track of an mp4, resampled by decord to `sample_rate`, mono float32 [samples]."""
    import decord

    reader = decord.AudioReader(io.BytesIO(data), ctx=decord.cpu(0), sample_rate=sample_rate, mono=True)
    return reader[:].asnumpy().reshape(-1).astype(np.float32)


class LogMel:
    """`[samples]` -> `[1, n_mels, frames]` log-mel, with optional SpecAugment masks."""

    def __init__(self, sample_rate=16000, n_mels=64, n_fft=400, hop_length=160, spec_augment=False):
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels
        )
        self.masks = None
        if spec_augment:
            self.masks = torch.nn.Sequential(
                torchaudio.transforms.FrequencyMasking(freq_mask_param=max(1, n_mels // 8)),
                torchaudio.transforms.TimeMasking(time_mask_param=20),
            )

    def __call__(self, wave: torch.Tensor) -> torch.Tensor:
        spec = torch.log(self.mel(wave) + 1e-6).unsqueeze(0)
        return self.masks(spec) if self.masks is not None else spec


class AudioField:
    """Audio member (or the mp4's audio track) -> fixed-length `audio` or `mel`."""

    def __init__(self, sample_rate=16000, seconds=2.0, train=True, from_video=True, min_seconds=0.1,
                 silence_peak=1e-4, n_mels: int | None = None, spec_augment=False, out_key=None,
                 trim_db: float | None = None):
        self.sample_rate, self.length = sample_rate, int(round(seconds * sample_rate))
        self.train, self.min_seconds, self.silence_peak = train, min_seconds, silence_peak
        self.trim_db = trim_db
        self.extensions = AUDIO_EXTENSIONS + (("mp4",) if from_video else ())
        self.logmel = LogMel(sample_rate, n_mels, spec_augment=spec_augment and train) if n_mels else None
        self.out_key = out_key or ("mel" if n_mels else "audio")

    def load(self, sample: dict) -> torch.Tensor:
        key = sample["__key__"]
        audio_exts = [e for e in AUDIO_EXTENSIONS if e in sample]
        if audio_exts:
            try:
                wave, rate = decode_audio(sample[audio_exts[0]])
            except (soundfile.LibsndfileError, RuntimeError, ValueError) as exn:
                raise SkipSample("corrupt_audio", f"{key}: {exn}") from None
            wave = torch.from_numpy(wave)
            if rate != self.sample_rate:
                wave = torchaudio.functional.resample(wave, rate, self.sample_rate)
            return wave
        data = member(sample, self.extensions, "audio")
        try:
            return torch.from_numpy(decode_video_audio(data, self.sample_rate))
        except Exception as exn:  # decord: DECORDError "Can't find audio stream"
            reason = "no_audio_track" if "audio stream" in str(exn) else "corrupt_audio"
            raise SkipSample(reason, f"{key}: {str(exn)[-120:]}") from None

    def check(self, wave: torch.Tensor, key: str) -> None:
        """SkipSample for a track too short or too quiet to learn from."""
        if wave.numel() < self.min_seconds * self.sample_rate:
            raise SkipSample("short_audio", f"{key}: {wave.numel() / self.sample_rate:.3f}s")
        if wave.abs().max() < self.silence_peak:
            raise SkipSample("silent_audio", key)

    def window(self, wave: torch.Tensor, start: int) -> torch.Tensor:
        """`seconds` of `wave` from sample `start` (clamped into the track, zero-padded at the end),
        as the model input (waveform or log-mel)."""
        start = max(0, min(start, wave.numel() - self.length))
        wave = wave[start : start + self.length]
        if wave.numel() < self.length:
            wave = torch.nn.functional.pad(wave, (0, self.length - wave.numel()))
        return self.logmel(wave) if self.logmel is not None else wave

    def trim(self, wave: torch.Tensor) -> torch.Tensor:
        """`wave` from its first to its last 10 ms frame within `trim_db` of the loudest frame."""
        hop = max(1, self.sample_rate // 100)
        frames = wave[: wave.numel() // hop * hop].view(-1, hop)
        if frames.shape[0] == 0:
            return wave
        rms = frames.pow(2).mean(1).sqrt()
        loud = (rms >= rms.max() * 10 ** (-self.trim_db / 20)).nonzero().flatten()
        return wave[int(loud[0]) * hop : (int(loud[-1]) + 1) * hop]

    def decode(self, sample: dict) -> dict:
        key = sample["__key__"]
        wave = self.load(sample)
        self.check(wave, key)
        if self.trim_db is not None:
            wave = self.trim(wave)
        extra = max(0, wave.numel() - self.length)
        out = {self.out_key: self.window(wave, randint(extra + 1) if self.train else extra // 2)}
        if self.logmel is None:
            out[f"{self.out_key}_samples"] = min(wave.numel(), self.length)
        return out
