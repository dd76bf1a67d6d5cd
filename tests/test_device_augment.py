"""GPU-side augmentation (mmssl.data.device_augment), checked on the CPU: each operation against
torchvision's per-image function, the crop draws against v2.RandomResizedCrop's, the views against
the worker path's, and a recipe that trains, resumes exactly and reads nothing back per step."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torchvision.transforms import v2

from conftest import ROOT
from mmssl.data.device_augment import (DeviceAugment, _blend, adjust_hue, crop_boxes, gaussian_blur, grayscale,
                                       load_transform)
from mmssl.data.image import IMAGENET_MEAN, IMAGENET_STD
from mmssl.data.views import ssl_augment
from test_train import ENV, assert_same_parameters, reference_and_resumed


@pytest.fixture(scope="module")
def photos(stamp_tree) -> torch.Tensor:
    """Real photos as the workers leave them for the device: uint8 `[16, 3, 72, 72]`."""
    paths = sorted(p for p in stamp_tree.rglob("*.png") if p.name != "broken.png")[:16]
    square = load_transform(72)
    return torch.stack([square(Image.open(p).convert("RGB")) for p in paths])


def test_colour_and_blur_match_torchvision_image_by_image(photos):
    """Each factor per image, against torchvision's function at that factor (grayscale is torchvision's own)."""
    x = photos.float() / 255
    gen = torch.Generator().manual_seed(0)
    factor = torch.empty(len(x)).uniform_(0.6, 1.4, generator=gen)
    hue = torch.empty(len(x)).uniform_(-0.1, 0.1, generator=gen)
    sigma = torch.empty(len(x)).uniform_(0.1, 2.0, generator=gen)
    ours = {"brightness": _blend(x, torch.zeros_like(x), factor),
            "contrast": _blend(x, grayscale(x).mean((1, 2, 3), keepdim=True), factor),
            "saturation": _blend(x, grayscale(x), factor), "hue": adjust_hue(x, hue),
            "blur": gaussian_blur(x, 7, sigma)}
    for name, batch in ours.items():
        for i, img in enumerate(x):
            f, h, s = float(factor[i]), float(hue[i]), float(sigma[i])
            theirs = {"brightness": lambda: TF.adjust_brightness(img, f), "contrast": lambda: TF.adjust_contrast(img, f),
                      "saturation": lambda: TF.adjust_saturation(img, f), "hue": lambda: TF.adjust_hue(img, h),
                      "blur": lambda: TF.gaussian_blur(img, [7, 7], [s, s])}
            torch.testing.assert_close(batch[i], theirs[name](), rtol=0, atol=1e-5, msg=f"{name}, image {i}")
    # sigma 0: the blur changes nothing
    torch.testing.assert_close(gaussian_blur(x, 7, torch.zeros(len(x))), x, rtol=0, atol=1e-6)


def test_the_workers_separable_blur_is_torchvisions_blur(stamp_tree):
    """SeparableGaussianBlur against v2.GaussianBlur at the same seed, on real photos at 224 px (23
    taps, SimCLR's size) as uint8 tensors, PIL images and floats: the same sigma draw, the same
    picture to rounding."""
    from mmssl.data.views import SeparableGaussianBlur

    paths = sorted(p for p in stamp_tree.rglob("*.png") if p.name != "broken.png")[:6]
    square = load_transform(224)
    images = [square(Image.open(p).convert("RGB")) for p in paths]
    inputs = images + [TF.to_pil_image(x) for x in images[:3]] + [x.float() / 255 for x in images[:3]]
    ours, theirs = SeparableGaussianBlur(23, (0.1, 2.0)), v2.GaussianBlur(23, (0.1, 2.0))
    for i, x in enumerate(inputs):
        torch.manual_seed(i)
        a = ours(x)
        torch.manual_seed(i)
        b = theirs(x)
        assert type(a) is type(b)
        if isinstance(a, Image.Image):
            a, b = TF.pil_to_tensor(a), TF.pil_to_tensor(b)
        assert a.dtype == b.dtype
        diff = (a.double() - b.double()).abs()
        if a.is_floating_point():
            assert diff.max() < 1e-5, i
        else:  # integer output: a sum that lands near .5 can round the other way
            assert diff.max() <= 1 and (diff > 0).double().mean() < 1e-3, i
    assert (SeparableGaussianBlur(23, (2.0, 2.0))(images[0]).float() - images[0].float()).abs().mean() > 1  # it blurs


def test_crops_are_drawn_as_random_resized_crop_draws_them():
    h, w, n = 72, 100, 20000
    boxes = crop_boxes(n, h, w, (0.08, 1.0), (3 / 4, 4 / 3), torch.Generator().manual_seed(1))
    cw, ch = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    torch.manual_seed(1)
    rrc = v2.RandomResizedCrop(32, scale=(0.08, 1.0))
    theirs = [rrc.make_params([torch.zeros(3, h, w)]) for _ in range(n)]
    t_area = torch.tensor([p["height"] * p["width"] / (h * w) for p in theirs])
    t_ratio = torch.tensor([p["width"] / p["height"] for p in theirs])
    for q in (0.1, 0.5, 0.9):  # the quantiles of area share and aspect ratio agree
        assert abs(float((cw * ch / (h * w)).quantile(q) - t_area.quantile(q))) < 0.01, q
        assert abs(float((cw / ch).quantile(q) - t_ratio.quantile(q))) < 0.02, q
    # Where no draw fits (a 10 x 100 strip at 90% of its area), both take the same centre crop.
    fallback = crop_boxes(3, 10, 100, (0.9, 1.0), (3 / 4, 4 / 3), torch.Generator().manual_seed(0))
    p = v2.RandomResizedCrop(4, scale=(0.9, 1.0)).make_params([torch.zeros(3, 10, 100)])
    assert fallback.tolist() == [[p["left"], p["top"], p["left"] + p["width"], p["top"] + p["height"]]] * 3


def test_box_averaged_crop_is_close_to_antialiased_resize(photos):
    from torchvision.ops import roi_align

    x = photos.float() / 255
    boxes = crop_boxes(len(x), 72, 72, (0.08, 1.0), (3 / 4, 4 / 3), torch.Generator().manual_seed(2))
    ours = roi_align(x, torch.cat([torch.arange(len(x), dtype=torch.float32)[:, None], boxes], 1), (32, 32), 1.0, -1,
                     aligned=True)
    for i, (left, top, right, bottom) in enumerate(boxes.int().tolist()):
        theirs = TF.resized_crop(x[i], top, left, bottom - top, right - left, [32, 32], antialias=True)
        assert (ours[i] - theirs).abs().mean() < 0.01, i  # 0.3% of the range on average (measured)


def test_views_are_seeded_and_distributed_as_the_worker_views(photos):
    augment = DeviceAugment(32, (0.2, 1.0), blur=0.5, solarize=0.2, color=1.0)
    a, b = augment(photos, seed=7), augment(photos, seed=7)
    assert len(a) == 2 and a[0].shape == (16, 3, 32, 32) and a[0].dtype == torch.float32
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, rtol=0, atol=0)
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[0], augment(photos, seed=8)[0])
    # Over many draws, each channel's mean and spread match ssl_augment's in the workers.
    torch.manual_seed(0)
    worker = ssl_augment(32, (0.2, 1.0), blur=0.5, solarize=0.2, color=1.0)
    theirs = torch.stack([worker(img) for _ in range(16) for img in photos])
    ours = torch.cat([v for seed in range(8) for v in augment(photos, seed)])
    for stat in (lambda t: t.mean((0, 2, 3)), lambda t: t.std((0, 2, 3))):
        torch.testing.assert_close(stat(ours), stat(theirs), rtol=0, atol=0.05)


def test_flip_and_grayscale_happen_at_their_rates(photos):
    """Whole-image crops and no jitter: a view is the image or its mirror; with colour, 20% grey."""
    plain = DeviceAugment(32, (1.0, 1.0), blur=0.0, color=0.0, views=1)
    whole = torch.stack([TF.normalize(TF.resize(p.float() / 255, [32, 32], antialias=True), list(IMAGENET_MEAN), list(IMAGENET_STD))
                         for p in photos])
    flips = []
    for seed in range(16):
        [view] = plain(photos, seed)
        same = (view - whole).abs().flatten(1).mean(1)
        mirrored = (view - whole.flip(3)).abs().flatten(1).mean(1)
        assert (torch.minimum(same, mirrored) < 0.06).all(), seed  # resampling differs, not content
        flips.append(mirrored < same)
    assert 0.4 < torch.cat(flips).float().mean() < 0.6
    grey = DeviceAugment(32, (1.0, 1.0), blur=0.0, color=1.0, views=1)
    views = torch.cat([grey(photos, seed)[0] for seed in range(16)])
    rgb = views * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    is_grey = (rgb - rgb.mean(1, keepdim=True)).abs().flatten(1).amax(1) < 1e-4
    assert 0.12 < is_grey.float().mean() < 0.28


def simclr_cmd(shards, run, *extra) -> list[str]:
    return [sys.executable, str(ROOT / "recipes" / "image_ssl.py"), "--config", str(ROOT / "recipes/configs/simclr_demo.yaml"),
            f"output_dir={run}", f"data.train={shards}", "data.val=", "batch_size=8", "num_workers=2", "log_every=1",
            "tensorboard=false", "warmup_steps=2", "augment.on=device", "augment.blur=0.5", *extra]


@pytest.mark.slow
def test_simclr_on_device_resumes_after_kill_9_with_the_same_parameters(fashion_shards, tmp_path):
    steps = ["max_steps=8", "save_every=3", "keep_checkpoints=5"]
    ref, run = reference_and_resumed(lambda out: simclr_cmd(fashion_shards, out, *steps), tmp_path, "step_0000003")
    assert_same_parameters(ref, run, "step_0000008")


def test_device_augmentation_is_refused_where_the_views_are_not_two(fashion_shards, tmp_path):
    cmd = [sys.executable, str(ROOT / "recipes" / "image_ssl.py"), "--config", str(ROOT / "recipes/configs/dino_demo.yaml"),
           f"output_dir={tmp_path / 'run'}", f"data.train={fashion_shards}", "augment.on=device"]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]
    assert "augment.on does nothing for dino" in proc.stderr and not (tmp_path / "run").exists()
