"""Probing an intermediate stage of a backbone (mmssl.eval.backbone_model.BackboneEval(stage=...))."""
from __future__ import annotations

import pytest
import torch

from mmssl.eval.backbone_model import BackboneEval
from mmssl.models.encoders import EncoderSpecError, build_encoder
from mmssl.models.vit import ViT
from mmssl.recipe_image import IMAGE_SSL_DEFAULTS, RESNET_32PX, SMALL_RESNET


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return build_encoder(SMALL_RESNET).eval()


@pytest.mark.parametrize("stage", [0, 1, 2, 3, 4])
def test_each_resnet_stage_is_its_averaged_output(resnet, stage):
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        x = resnet.model.embedder(images)
        for block in resnet.model.encoder.stages[:stage]:
            x = block(x)
    expected = x.mean(dim=(2, 3))
    got = BackboneEval(resnet, stage).image_features(images)
    assert got.shape == (3, ([32] + SMALL_RESNET["config"]["hidden_sizes"])[stage])
    torch.testing.assert_close(got, expected)


def test_the_last_stage_is_the_pooled_features_the_table_probes(resnet):
    images = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(BackboneEval(resnet, 4).image_features(images), BackboneEval(resnet).image_features(images))


def test_a_transformers_vit_stage_averages_its_tokens():
    enc = build_encoder({"name": "vit", "modality": "image", "config": {
        "model_type": "vit", "image_size": 32, "patch_size": 8, "hidden_size": 24, "num_hidden_layers": 2,
        "num_attention_heads": 2, "intermediate_size": 32}}).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens = enc.model.embeddings(images)  # [B, 1 + 16, 24]: CLS and patches
    torch.testing.assert_close(BackboneEval(enc, 0).image_features(images), tokens.mean(1))


def test_a_stage_that_does_not_exist_is_named(resnet):
    with pytest.raises(EncoderSpecError, match="stage 5 does not exist: ResNetModel has stages 0 \\(stem\\) to 4"):
        BackboneEval(resnet, 5)
    with pytest.raises(EncoderSpecError, match="only a transformers image backbone exposes its stages, not ViT"):
        BackboneEval(ViT(image_size=32, patch_size=4, dim=24, depth=1, heads=2), 1)


def test_the_image_demos_resnet_ends_on_a_2x2_map_at_32_px():
    # The reason the image SSL demos drop the fourth stage: at 32 px it sees a single position.
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        maps = [build_encoder(spec).model(images, output_hidden_states=True).hidden_states
                for spec in (RESNET_32PX, SMALL_RESNET)]
    assert [tuple(h.shape[-2:]) for h in maps[0]] == [(8, 8), (8, 8), (4, 4), (2, 2)]
    assert tuple(maps[1][-1].shape[-2:]) == (1, 1)
    assert IMAGE_SSL_DEFAULTS["backbone"].default is RESNET_32PX
