"""The context encoder (mmssl/objectives/inpainting.py): its loss against the formula, its three
mask shapes, and that it learns to paint held-out Fashion-MNIST better than the mean colour."""
from __future__ import annotations

import itertools

import pytest
import torch

from conftest import train_steps
from mmssl.data import ImageField, build_loader, eval_transform
from mmssl.models.encoders import build_encoder
from mmssl.models.heads import decoder_plan
from mmssl.objectives.inpainting import ContextEncoder, block_mask, center_mask, inpainting_loss, region_mask
from mmssl.recipe_image import RESNET_32PX, one_image


def test_loss_is_the_mean_squared_error_over_hidden_pixels():
    torch.manual_seed(0)
    pred, images = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    mask = (torch.rand(2, 1, 8, 8) < 0.3).float()
    total = count = 0.0
    for b, c, y, x in itertools.product(range(2), range(3), range(8), range(8)):
        if mask[b, 0, y, x]:
            total += float(pred[b, c, y, x] - images[b, c, y, x]) ** 2
            count += 1
    assert abs(float(inpainting_loss(pred, images, mask)) - total / count) < 1e-5
    # Visible pixels do not count: changing them leaves the loss as it was.
    assert torch.equal(inpainting_loss(pred + 5 * (1 - mask), images, mask), inpainting_loss(pred, images, mask))


def test_mask_shapes_hide_what_they_promise():
    torch.manual_seed(0)
    c = center_mask(3, 32)
    assert c.sum(dim=(1, 2, 3)).tolist() == [256.0] * 3 and c[0, 0, 8:24, 8:24].all()
    blocks, region = block_mask(64, 32, 0.25), region_mask(64, 32, 0.25)
    share = blocks.mean(dim=(1, 2, 3))
    assert (share >= 0.25).all() and (share < 0.25 + 64 / 1024 + 1e-6).all()  # stops within one 8 x 8 block
    assert (region.mean(dim=(1, 2, 3)) - 0.25).abs().max() < 0.01
    for m in (blocks, region):  # at random places: no pixel is hidden in every image
        assert m.mean(0).max() < 1
    # A region is one smooth blob, not salt and pepper: most hidden pixels have hidden neighbours.
    same = (region[..., 1:, :] == region[..., :-1, :]).float().mean()
    assert same > 0.9
    assert decoder_plan(32) == (4, 3) and decoder_plan(224) == (7, 5)
    with pytest.raises(ValueError):
        decoder_plan(7)


def test_it_paints_held_out_images_better_than_their_own_mean_colour(fashion_shards, shape="region"):
    """Against filling the hole with the mean colour of the image's visible pixels, per channel."""
    torch.manual_seed(0)
    cfg = {"image_size": 32, "augment": {"scale_min": 0.5}}
    train = build_loader(str(fashion_shards), one_image(cfg), 64, num_workers=0, seed=0)
    test = next(iter(build_loader(str(fashion_shards), [ImageField(eval_transform(32))], 100, split="test",
                                  shuffle=False, drop_last=False, num_workers=0)))["image"]
    model = ContextEncoder(build_encoder(RESNET_32PX), 32, mask=shape, decoder_dim=128)
    train_steps(model, train, 80, lr=2e-3)
    model.eval()
    with torch.no_grad():
        mask = model.hide(test)
        painted = inpainting_loss(model.paint(test, mask)[0], test, mask)
        visible = 1 - mask
        own_mean = (test * visible).sum((2, 3), keepdim=True) / visible.sum((2, 3), keepdim=True)
        floor = inpainting_loss(own_mean.expand_as(test), test, mask)
    print(f"{shape}: held-out loss {float(painted):.3f}, each image's visible mean colour {float(floor):.3f}")
    assert painted < 0.7 * floor
