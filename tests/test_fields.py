"""Per-modality fields on real media: clip sampling rules, audio edge cases, multi-view shapes."""
from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from mmssl.data import AudioField, ImageField, MultiCrop, SkipSample, TextField, TwoViews, VideoField, ssl_augment
from mmssl.data.video import clip_indices


def test_clip_indices_centre_random_and_loop():
    assert clip_indices(100, 4, 3, random_start=False) == [45, 48, 51, 54]
    assert clip_indices(10, 16, 1, random_start=True) == [i % 10 for i in range(16)]  # loops a short video
    starts = {clip_indices(30, 4, 2, random_start=True)[0] for _ in range(200)}
    assert starts == set(range(30 - 7 + 1))


@pytest.fixture(scope="module")
def clip_bytes(video_dir) -> bytes:
    return sorted((video_dir / "pan_left").glob("clip*.mp4"))[0].read_bytes()


def test_video_field_decodes_a_real_clip(clip_bytes):
    field = VideoField(num_frames=8, stride=1, size=48, train=False)
    video = field.decode({"__key__": "k", "mp4": clip_bytes})["video"]
    assert video.shape == (8, 3, 48, 48) and video.dtype == torch.float32
    # camera motion: consecutive frames differ
    assert (video[1:] - video[:-1]).abs().mean() > 0.01


def test_short_video_loops_or_is_skipped_by_rule(clip_bytes):
    looped = VideoField(num_frames=30, stride=2, size=32, train=False).decode({"__key__": "k", "mp4": clip_bytes})
    assert looped["video"].shape[0] == 30
    with pytest.raises(SkipSample) as info:
        VideoField(num_frames=30, stride=2, size=32, min_frames=59).decode({"__key__": "k", "mp4": clip_bytes})
    assert info.value.reason == "short_video"


def test_corrupt_and_missing_video(clip_bytes):
    field = VideoField(num_frames=4, size=32)
    for sample, reason in [({"mp4": clip_bytes[: len(clip_bytes) // 10]}, "corrupt_video"),
                           ({"mp4": b"\x00" * 100}, "corrupt_video"), ({"jpg": b"x"}, "missing_video")]:
        with pytest.raises(SkipSample) as info:
            field.decode({"__key__": "k", **sample})
        assert info.value.reason == reason


def flac(wave: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    soundfile.write(buf, wave, rate, format="FLAC")
    return buf.getvalue()


def test_audio_field_resamples_crops_and_pads(sounds):
    wave, rate = soundfile.read(str(sounds[0]), dtype="float32")
    data = sounds[0].read_bytes()
    out = AudioField(sample_rate=8000, seconds=0.5, train=False).decode({"__key__": "k", "ogg": data})["audio"]
    assert out.shape == (4000,)
    long = AudioField(sample_rate=8000, seconds=60.0, train=False).decode({"__key__": "k", "ogg": data})["audio"]
    n = int(round(len(wave) / rate * 8000))
    assert long.shape == (480000,) and long[n + 100 :].abs().max() == 0  # zero padding after the sound


@pytest.mark.parametrize("wave, reason", [
    (np.zeros(16000, np.float32), "silent_audio"),
    (0.5 * np.ones(100, np.float32), "short_audio"),
])
def test_silent_and_too_short_audio_are_skipped(wave, reason):
    with pytest.raises(SkipSample) as info:
        AudioField(seconds=1.0).decode({"__key__": "k", "flac": flac(wave, 16000)})
    assert info.value.reason == reason


def test_video_without_audio_track_is_reported(video_dir):
    import decord  # noqa: F401  (AudioField reads mp4 sound through decord)

    from mmssl.data.transcode import transcode_video

    mp4 = transcode_video(video_dir / "vtest.avi", max_seconds=1, max_size=64)[0][0]
    with pytest.raises(SkipSample) as info:
        AudioField(seconds=0.5).decode({"__key__": "k", "mp4": mp4})
    assert info.value.reason == "no_audio_track"


def test_log_mel_shape_and_spec_augment(sounds):
    field = AudioField(sample_rate=16000, seconds=1.0, n_mels=64, spec_augment=True, train=True)
    mel = field.decode({"__key__": "k", "ogg": sounds[1].read_bytes()})["mel"]
    assert mel.shape == (1, 64, 101) and torch.isfinite(mel).all()


def test_text_field_rejects_empty_and_tokenises_per_batch():
    field = TextField()
    assert field.decode({"__key__": "k", "txt": "  A koala. \n".encode()}) == {"text": "A koala."}
    for raw, reason in [(b" \n", "empty_caption"), (b"\xff\xfe\x00", "bad_caption")]:
        with pytest.raises(SkipSample) as info:
            field.decode({"__key__": "k", "txt": raw})
        assert info.value.reason == reason


def test_two_views_and_multi_crop_shapes():
    img = Image.new("RGB", (120, 90), (10, 200, 30))
    field = ImageField(TwoViews(ssl_augment(32)), out_key="views")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    views = field.decode({"__key__": "k", "png": buf.getvalue()})["views"]
    assert [v.shape for v in views] == [(3, 32, 32)] * 2
    crops = MultiCrop(global_size=32, local_size=16, n_global=2, n_local=4)(img)
    assert [tuple(c.shape[1:]) for c in crops] == [(32, 32)] * 2 + [(16, 16)] * 4


def test_colour_jitter_strength_zero_keeps_intensities_and_positive_changes_them():
    # A flat grey image: crops and flips cannot change it, so only the colour jitter can.
    img = Image.new("RGB", (28, 28), (100, 100, 100))
    torch.manual_seed(0)
    plain = ssl_augment(32, (1.0, 1.0), blur=0.0, color=0.0)
    reference = plain(img)
    assert all(torch.equal(plain(img), reference) for _ in range(20))
    jittered = ssl_augment(32, (1.0, 1.0), blur=0.0, color=1.0)
    assert sum(not torch.allclose(jittered(img), reference) for _ in range(20)) >= 10  # p = 0.8 per draw


def test_transparent_cutouts_are_composited_on_white():
    img = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    from mmssl.data.image import decode_image

    assert decode_image(buf.getvalue()).getpixel((3, 3)) == (255, 255, 255)
