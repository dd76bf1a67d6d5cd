"""Per-modality fields on real media: clip sampling rules, audio edge cases, multi-view shapes."""
from __future__ import annotations

import io
import tarfile

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


def _encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_fast_decode_gives_pillows_picture_and_leaves_the_rest_to_pillow(image_shards):
    from mmssl.data.image import decode_for_transform, decode_image

    def pixels(img) -> torch.Tensor:
        return img.int() if isinstance(img, torch.Tensor) else torch.from_numpy(np.array(img)).permute(2, 0, 1).int()

    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
    cutout = noise.convert("RGBA")
    cutout.putalpha(Image.fromarray(rng.integers(0, 256, (40, 56), dtype=np.uint8)))
    palette = noise.convert("P")
    fast = {"RGB PNG": _encoded(noise, "PNG"), "grey PNG": _encoded(noise.convert("L"), "PNG"),
            "palette PNG": _encoded(palette, "PNG"), "grey PNG, colour key": _encoded(noise.convert("L"), "PNG", transparency=0),
            "RGB JPEG": _encoded(noise, "JPEG"), "grey JPEG": _encoded(noise.convert("L"), "JPEG")}
    # The rest goes to Pillow: transparency (composited on white), 16-bit grey (scaled to 8 bits, not
    # clipped), CMYK, formats torchvision does not read.
    pillow = {"RGBA PNG": _encoded(cutout, "PNG"), "grey + alpha PNG": _encoded(cutout.convert("LA"), "PNG"),
              "palette PNG, one colour clear": _encoded(palette, "PNG", transparency=3),
              "16-bit grey PNG": _encoded(Image.fromarray(np.full((8, 8), 30000, np.uint16)), "PNG"),
              "CMYK JPEG": _encoded(noise.convert("CMYK"), "JPEG"), "WebP": _encoded(noise, "WEBP")}
    for name, data in {**fast, **pillow}.items():
        got = decode_for_transform(data)
        assert isinstance(got, torch.Tensor if name in fast else Image.Image), name
        # The same picture: libpng's exactly; libjpeg-turbo's inverse DCT may differ by a level or two.
        assert (pixels(got) - pixels(decode_image(data))).abs().max() <= (2 if "JPEG" in name else 0), name
    assert (pixels(decode_for_transform(pillow["RGBA PNG"])) > pixels(noise)).float().mean() > 0.4  # on white
    assert decode_for_transform(pillow["16-bit grey PNG"]).getpixel((3, 3)) == (round(30000 / 257),) * 3
    # A JPEG at least four times the draft size decodes at a reduced scale in Pillow's draft mode.
    big = _encoded(noise.resize((448, 320)), "JPEG")
    assert decode_for_transform(big, draft_size=56).size == (112, 80)
    assert isinstance(decode_for_transform(big, draft_size=112), torch.Tensor)
    # Truncated files are skipped as corrupt whichever decoder saw them first.
    for data in (fast["RGB JPEG"][:300], fast["RGB PNG"][:300]):
        for decoder in ("fast", "pillow"):
            with pytest.raises(SkipSample) as info:
                ImageField(lambda im: im, decoder=decoder).decode({"__key__": "k", "jpg": data})
            assert info.value.reason == "corrupt_image"
    # Tux Paint's photos, as make_shards wrote them (cut-outs with alpha, palettes, RGB): the same
    # picture either way, and the opaque ones take the fast path.
    paths = []
    for shard in sorted(image_shards.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                if member.name.endswith((".png", ".jpg")):
                    data = tar.extractfile(member).read()
                    got = decode_for_transform(data)
                    assert torch.equal(pixels(got), pixels(decode_image(data))), member.name
                    img = Image.open(io.BytesIO(data))
                    opaque = img.mode in ("RGB", "L") or (img.mode == "P" and "transparency" not in img.info)
                    assert isinstance(got, torch.Tensor) == opaque, member.name
                    # the same photo as an img2dataset JPEG: torchvision's decode, Pillow's picture
                    jpeg = _encoded(decode_image(data), "JPEG")
                    fast_jpeg = decode_for_transform(jpeg)
                    assert isinstance(fast_jpeg, torch.Tensor), member.name
                    assert (pixels(fast_jpeg) - pixels(decode_image(jpeg))).abs().max() <= 2, member.name
                    paths.append(opaque)
    assert len(paths) >= 20


def test_every_view_builder_gives_the_same_shapes_from_either_decoder():
    from mmssl.data.image import eval_transform, train_transform
    from mmssl.data.views import strong_augment, weak_augment

    rng = np.random.default_rng(1)
    data = _encoded(Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)), "JPEG")
    transforms = {"train": train_transform(32, color=1.0), "eval": eval_transform(32), "ssl": TwoViews(ssl_augment(32, solarize=0.5)),
                  "multi": MultiCrop(global_size=32, local_size=16, n_global=2, n_local=2), "weak": weak_augment(32),
                  "strong": strong_augment(32)}
    for name, t in transforms.items():
        fast = ImageField(t).decode({"__key__": "k", "jpg": data})["image"]
        pil = ImageField(t, decoder="pillow").decode({"__key__": "k", "jpg": data})["image"]
        shapes = [v.shape for v in fast] if isinstance(fast, list) else fast.shape
        assert shapes == ([v.shape for v in pil] if isinstance(pil, list) else pil.shape), name
        first = fast[0] if isinstance(fast, list) else fast
        assert first.dtype == torch.float32 and -3 < float(first.mean()) < 3, name  # normalised, not 0-255
    # The eval transform is deterministic: both decoders give nearly the same normalised pixels.
    fast = ImageField(transforms["eval"]).decode({"__key__": "k", "jpg": data})["image"]
    pil = ImageField(transforms["eval"], decoder="pillow").decode({"__key__": "k", "jpg": data})["image"]
    assert (fast - pil).abs().mean() < 0.05
    with pytest.raises(ValueError, match="fast or pillow"):
        ImageField(transforms["eval"], decoder="opencv")
