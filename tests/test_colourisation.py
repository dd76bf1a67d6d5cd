"""Colourisation (mmssl/objectives/colourisation.py, mmssl/models/colour.py): Lab against published
values, the ab gamut, the soft encoding, rebalancing and loss against the paper's formulas, an
encoder that keeps reading lightness after it is saved, and that it learns the colours of held-out
colour emoji."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import train_steps
from mmssl.models.colour import LightnessEncoder, ab_gamut, lab_to_rgb, rgb_to_lab
from mmssl.models.encoders import build_encoder
from mmssl.objectives.colourisation import Colourisation, annealed_mean, colourisation_loss, rebalancing_weights, \
    soft_encode
from mmssl.data import ImageField, build_loader, eval_transform
from mmssl.recipe_image import RESNET_32PX, one_image


def test_lab_matches_published_values_and_round_trips():
    # sRGB white, red, green, blue, mid grey: CIE Lab (D65) as colour references list them.
    rgb = torch.tensor([[1.0, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0.5]]).T.reshape(3, 5, 1)
    expected = [[100, 0, 0], [53.24, 80.09, 67.20], [87.73, -86.18, 83.18], [32.30, 79.19, -107.86], [53.39, 0, 0]]
    lab = rgb_to_lab(rgb).squeeze(-1).T
    assert torch.allclose(lab, torch.tensor(expected), atol=0.02)
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(lab_to_rgb(rgb_to_lab(x)), x, atol=1e-4)


def test_gamut_bins_are_the_grid_cells_holding_a_displayable_colour():
    bins = ab_gamut()
    assert bins.shape == (262, 2) and (bins % 10 == 0).all()
    assert [0.0, 0.0] in bins.tolist() and [80.0, 70.0] in bins.tolist()  # grey, and pure red's cell
    assert [-110.0, -110.0] not in bins.tolist()  # no sRGB colour is that green-blue


def test_soft_encoding_rebalancing_and_loss_follow_the_paper():
    torch.manual_seed(0)
    bins = ab_gamut()
    ab = torch.tensor([[3.0, -4.0], [61.0, 22.0]])
    z = soft_encode(ab, bins)
    for i in range(2):  # the 5 nearest bins, Gaussian weights of sigma 5, normalised
        d = ((bins - ab[i]) ** 2).sum(1)
        near = d.argsort()[:5]
        w = torch.exp(-d[near] / 50)
        assert torch.allclose(z[i, near], w / w.sum())
        assert (z[i] > 0).sum() == 5 and abs(float(z[i].sum()) - 1) < 1e-6
    prior = torch.rand(len(bins))
    prior /= prior.sum()
    weights = rebalancing_weights(prior, bins, 0.5)
    kernel = torch.exp(-torch.cdist(bins, bins) ** 2 / 50)
    smooth = kernel @ prior / (kernel @ prior).sum()
    raw = 1 / (0.5 * smooth + 0.5 / len(bins))
    assert torch.allclose(weights, raw / (smooth * raw).sum(), rtol=1e-5)
    assert math.isclose(float((smooth * weights).sum()), 1.0, rel_tol=1e-5)
    logits = torch.randn(2, len(bins))
    direct = 0.0
    for i in range(2):
        q_star = int(z[i].argmax())
        direct -= float(weights[q_star] * (z[i] * torch.log_softmax(logits[i], 0)).sum())
    assert math.isclose(float(colourisation_loss(logits, z, weights)), direct / 2, rel_tol=1e-5)
    # A distribution peaked on one bin decodes to that bin's colour.
    peaked = torch.full((1, len(bins), 1, 1), -30.0)
    peaked[0, 17] = 30.0
    assert torch.allclose(annealed_mean(peaked, bins)[0, :, 0, 0], bins[17])


def test_the_saved_encoder_still_reads_lightness_only(tmp_path):
    """What colourisation trains is an encoder of L; saved and loaded by build_encoder, it still
    converts RGB to L first, so two images with the same lightness and other colours agree."""
    torch.manual_seed(0)
    model = Colourisation(build_encoder(RESNET_32PX), 32, decoder_dim=64)
    assert isinstance(model.backbone, LightnessEncoder)
    model.backbone.save_pretrained(tmp_path)
    loaded = build_encoder({"name": str(tmp_path)}).eval()
    assert isinstance(loaded, LightnessEncoder)
    rgb = torch.rand(2, 3, 32, 32)
    lab = rgb_to_lab(rgb)
    other = lab_to_rgb(torch.cat([lab[:, :1], torch.zeros_like(lab[:, 1:])], 1))  # the same L, no colour
    mean, std = loaded.mean, loaded.std
    a, b = loaded((rgb - mean) / std), loaded((other - mean) / std)
    assert torch.allclose(a, b, atol=1e-3)
    model.backbone.eval()
    assert torch.allclose(model.backbone((rgb - mean) / std), a, atol=1e-5)


@pytest.mark.learning
def test_it_predicts_held_out_colours_better_than_any_fixed_colour_distribution(emoji_shards):
    """On the colour emoji test split (other emoji than in training), the paper's rebalanced loss of
    the trained model against the best constant distribution for that loss, fitted on the test
    pixels themselves: a baseline that sees the answers, but not the image. (The plain cross-entropy
    is no measure here: rebalancing moves probability to rare colours on purpose.)"""
    torch.manual_seed(0)
    cfg = {"image_size": 32, "augment": {"scale_min": 0.5}}
    train = build_loader(str(emoji_shards), one_image(cfg), 64, num_workers=0, seed=0)
    test = next(iter(build_loader(str(emoji_shards), [ImageField(eval_transform(32))], 1000, split="test",
                                  shuffle=False, drop_last=False, num_workers=0)))["image"]
    model = Colourisation(build_encoder(RESNET_32PX), 32, decoder_dim=128)
    train_steps(model, train, 200, lr=2e-3)
    model.eval()
    with torch.no_grad():
        _, ab = model.targets(test)
        target = soft_encode(ab.permute(0, 2, 3, 1).reshape(-1, 2), model.bins)
        q = len(model.bins)
        log_p = model.predict_ab(test)[0].permute(0, 2, 3, 1).reshape(-1, q).log_softmax(1)
        weights = rebalancing_weights(model.counts / model.counts.sum(), model.bins, model.rebalance)
        w = weights[target.argmax(1)].unsqueeze(1)
        constant = (w * target).sum(0) / (w * target).sum()  # minimises the rebalanced loss among fixed distributions

        def log_of(d: torch.Tensor) -> torch.Tensor:  # a fixed distribution for every pixel, no bin at 0
            return (0.999 * d + 0.001 / q).log().expand_as(target)

        learnt, fixed = colourisation_loss(log_p, target, weights), colourisation_loss(log_of(constant), target, weights)
    print(f"rebalanced loss {float(learnt):.3f}, best constant {float(fixed):.3f}, on {len(test)} images")
    assert learnt < 0.95 * fixed
