"""What a run saves is usable by standard tools: a transformers image tower with its image
processor gives, through `transformers.pipeline`, the features mmssl's evaluation computes; a
torchvision tower says how to load it, and loads that way."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import STAMPS, require


def real_photos(n: int) -> list[bytes]:
    """Real Tux Paint photos as RGB JPEGs (no transparency, so every decoder sees the same pixels)."""
    require(STAMPS, "tuxpaint-stamps-default")
    out = []
    for p in sorted(STAMPS.rglob("*.png"))[::37][:n]:
        buf = io.BytesIO()
        Image.open(p).convert("RGB").save(buf, "JPEG", quality=92)
        out.append(buf.getvalue())
    return out


@pytest.mark.parametrize("size, resize", [(32, None), (64, None), (224, None), (32, 32)])
def test_pipeline_features_match_mmssl_eval(tmp_path, size, resize):
    """The saved processor frames an image as mmssl's evaluation does: by default a zoom of 1 / 0.875
    before the centre crop, or (FixMatch's runs) `resize` = the crop, no zoom."""
    from transformers import AutoImageProcessor, pipeline

    from mmssl.config import plain
    from mmssl.data.image import decode_image, eval_transform
    from mmssl.eval.backbone_model import BackboneEval
    from mmssl.models.encoders import build_encoder, save_image_processor, saved_resize
    from mmssl.recipe_image import RESNET_32PX

    torch.manual_seed(size)
    build_encoder(plain(RESNET_32PX)).save_pretrained(tmp_path)
    assert save_image_processor(tmp_path, size, resize) and saved_resize(tmp_path) == (resize or round(size / 0.875))
    assert type(AutoImageProcessor.from_pretrained(tmp_path)).__name__.startswith("ConvNextImageProcessor")
    model = BackboneEval(build_encoder({"name": str(tmp_path), "freeze": True}))  # as python -m mmssl.eval loads it
    extract = pipeline("image-feature-extraction", model=str(tmp_path), device="cpu")
    transform = eval_transform(size, resize)
    for data in real_photos(12):
        ours = model.image_features(transform(decode_image(data)).unsqueeze(0))[0]
        theirs = torch.tensor(np.asarray(extract(Image.open(io.BytesIO(data)), pool=True))).flatten()
        assert torch.nn.functional.cosine_similarity(ours, theirs, dim=0) > 1 - 1e-4


def test_a_torchvision_tower_says_how_to_load_it_and_loads_that_way(tmp_path):
    import torchvision
    from safetensors.torch import load_file
    from transformers import AutoModel

    from mmssl.models.encoders import build_encoder

    torch.manual_seed(0)
    encoder = build_encoder({"name": "resnet18"}).eval()
    encoder.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"torchvision resnet18 saved by mmssl, not a transformers model: load it "
                                         r"with mmssl.models.encoders.build_encoder"):
        AutoModel.from_pretrained(tmp_path)
    readme = (tmp_path / "README.md").read_text()
    assert 'torchvision.models.get_model("resnet18")' in readme and "model.fc = torch.nn.Identity()" in readme
    model = torchvision.models.get_model("resnet18")  # the README's lines
    model.fc = torch.nn.Identity()
    model.load_state_dict(load_file(str(tmp_path / "model.safetensors")))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), encoder(x))
        torch.testing.assert_close(build_encoder({"name": str(tmp_path)}).eval()(x), encoder(x))
