"""Losses against direct, loop-based computations of their papers' formulas."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mmssl.losses import clip_loss, info_nce, siglip_loss


def unit(n, d, seed):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=1)


def test_info_nce_matches_the_formula():
    q, k = unit(5, 8, 0), unit(9, 8, 1)
    t, offset = 0.2, 3
    ref = 0.0
    for i in range(5):
        num = math.exp(float(q[i] @ k[offset + i]) / t)
        den = sum(math.exp(float(q[i] @ k[j]) / t) for j in range(9))
        ref += -math.log(num / den)
    assert torch.allclose(info_nce(q, k, t, offset), torch.tensor(ref / 5, dtype=torch.float64))


def test_clip_loss_matches_the_formula_and_is_symmetric():
    img, txt = unit(6, 4, 2), unit(6, 4, 3)
    scale = torch.tensor(1 / 0.07, dtype=torch.float64)
    ref = 0.0
    for i in range(6):
        li = [float(scale * img[i] @ txt[j]) for j in range(6)]
        lt = [float(scale * txt[i] @ img[j]) for j in range(6)]
        ref += -(li[i] - math.log(sum(math.exp(x) for x in li)))
        ref += -(lt[i] - math.log(sum(math.exp(x) for x in lt)))
    ref /= 2 * 6
    got = clip_loss(img, txt, img, txt, scale)
    assert torch.allclose(got, torch.tensor(ref, dtype=torch.float64))
    assert torch.allclose(got, clip_loss(txt, img, txt, img, scale))  # swapping modalities changes nothing


def test_clip_local_losses_average_to_the_full_batch_loss():
    img, txt = unit(8, 4, 4), unit(8, 4, 5)
    scale = torch.tensor(10.0, dtype=torch.float64)
    full = clip_loss(img, txt, img, txt, scale)
    halves = [clip_loss(img[r * 4:(r + 1) * 4], txt[r * 4:(r + 1) * 4], img, txt, scale, offset=r * 4) for r in range(2)]
    assert torch.allclose(full, sum(halves) / 2)


def test_siglip_loss_matches_the_formula():
    img, txt = unit(5, 4, 6), unit(5, 4, 7)
    t, b = torch.tensor(10.0, dtype=torch.float64), torch.tensor(-10.0, dtype=torch.float64)
    ref = 0.0
    for i in range(5):
        for j in range(5):
            z = 1.0 if i == j else -1.0
            ref += -math.log(1 / (1 + math.exp(-z * (float(t * img[i] @ txt[j]) + float(b)))))
    got = siglip_loss(img, txt, t, b)
    assert torch.allclose(got, torch.tensor(ref / 5, dtype=torch.float64))
    halves = [siglip_loss(img[r * 2:(r + 1) * 2 + (r == 1)], txt, t, b, offset=r * 2, global_batch=5) for r in range(2)]
    assert torch.allclose(sum(halves), got)
