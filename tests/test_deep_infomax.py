"""Deep InfoMax's local InfoNCE against the paper's formula computed term by term, and what it
accepts as a backbone. (Learning on real images: tests/test_ssl_learning.py; the recipe with two
processes and its configs: tests/test_ssl_recipes.py and tests/test_config.py, which find every
image method by itself.)"""
from __future__ import annotations

import math

import pytest
import torch

from mmssl.models.encoders import build_encoder
from mmssl.objectives.deep_infomax import DeepInfoMax, local_infonce
from mmssl.recipe_image import SMALL_RESNET


def test_local_infonce_is_the_papers_bound_term_by_term():
    torch.manual_seed(0)
    b, n, e = 4, 3, 5
    g, loc = torch.randn(b, e), torch.randn(b, n, e)

    def s(i, j, q):
        return float(g[i] @ loc[j, q]) / math.sqrt(e)

    terms = []
    for i in range(b):
        for p in range(n):
            others = [math.exp(s(i, j, q)) for j in range(b) if j != i for q in range(n)]
            terms.append(-math.log(math.exp(s(i, i, p)) / (math.exp(s(i, i, p)) + sum(others))))
    assert local_infonce(g, loc).item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)
    # A summary that matches its own locations and no other image's scores near zero loss.
    own = torch.eye(b).repeat_interleave(n, 0).view(b, n, b) * 50
    assert local_infonce(torch.eye(b) * 50, own).item() < 1e-3


def test_deep_infomax_reads_a_transformers_conv_backbone_and_its_stage_maps():
    model = DeepInfoMax(build_encoder(SMALL_RESNET), local_stage=2, embed_dim=16, hidden_dim=32)
    out = model({"image": torch.randn(6, 3, 32, 32)})
    assert math.isfinite(out["loss"].item()) and out["loss"].requires_grad
    # 16 locations of stage 2 at 32 px; 5 other images: chance is log(1 + 5 * 16) at initialisation.
    assert abs(out["loss"].item() - math.log(1 + 5 * 16)) < 1.0
    with pytest.raises(ValueError, match="transformers convolutional backbone"):
        DeepInfoMax(build_encoder({"name": "resnet18"}))
    with pytest.raises(ValueError, match="local_stage 7 does not exist"):
        DeepInfoMax(build_encoder(SMALL_RESNET), local_stage=7)
