"""Relative patch position: the pairs it draws, its loss against a direct computation, and the
chromatic-aberration guard. (Learning on real images: tests/test_ssl_learning.py; its recipe with
two processes and its configs: tests/test_ssl_recipes.py and tests/test_config.py.)"""
from __future__ import annotations

import pytest
import torch

from conftest import train_steps
from mmssl.objectives.relative_position import CENTRE, NEIGHBOURS, RelativePosition, guard_colour


class Flat(torch.nn.Module):
    out_dim = 3 * 4 * 4

    def forward(self, x):
        return x.flatten(1)


def cell_image(b: int = 5) -> torch.Tensor:
    """[b, 3, 12, 12] images whose 4 x 4 cells hold their cell number (0..8, row-major) plus 10 x the image index."""
    cells = torch.arange(9, dtype=torch.float32).view(3, 3).repeat_interleave(4, 0).repeat_interleave(4, 1)
    return torch.stack([cells + 10 * i for i in range(b)]).unsqueeze(1).repeat(1, 3, 1, 1)


def test_pairs_are_the_centre_and_the_neighbour_the_label_names():
    torch.manual_seed(0)
    model = RelativePosition(Flat(), crop=1.0, patch_size=4, hidden_dim=8, colour_guard="none")
    images = cell_image()
    centre, neighbour, labels = model.pairs(images)
    for i in range(len(images)):
        assert torch.all(centre[i] == CENTRE + 10 * i)
        assert torch.all(neighbour[i] == NEIGHBOURS[labels[i]] + 10 * i)
    assert len(NEIGHBOURS) == 8 and CENTRE not in NEIGHBOURS


def test_loss_is_the_cross_entropy_of_the_pair_classifier():
    model = RelativePosition(Flat(), crop=1.0, patch_size=4, hidden_dim=8, colour_guard="none")
    images = cell_image()
    torch.manual_seed(3)
    out = model({"image": images})
    torch.manual_seed(3)  # the same pairs again
    centre, neighbour, labels = model.pairs(images)
    logits = model.classifier(torch.cat([centre.flatten(1), neighbour.flatten(1)], 1))
    expected = -torch.log_softmax(logits, 1)[torch.arange(len(labels)), labels].mean()
    torch.testing.assert_close(out["loss"], expected)
    assert float(out["accuracy"]) == float((logits.argmax(1) == labels).float().mean())


def test_colour_guard_drops_two_channels_or_greys():
    torch.manual_seed(0)
    patches = torch.randn(64, 3, 8, 8)
    dropped = guard_colour(patches, "drop")
    same = (dropped == patches).flatten(2).all(-1)  # [N, 3]: which channels came through untouched
    assert torch.equal(same.sum(1), torch.ones(64, dtype=torch.long))
    assert dropped[~same].std() < 0.02  # the other two are faint noise
    assert set(same.float().argmax(1).tolist()) == {0, 1, 2}  # every channel gets kept sometimes
    grey = guard_colour(patches, "gray")
    assert torch.allclose(grey[:, 0], patches.mean(1)) and torch.equal(grey[:, 0], grey[:, 2])
    assert guard_colour(patches, "none") is patches
    with pytest.raises(ValueError, match="colour_guard"):
        RelativePosition(Flat(), colour_guard="blue")


def test_relative_position_learns_where_held_out_patches_lie(fashion_shards):
    """60 steps on real Fashion-MNIST: the 8-way position of held-out images' patches is named well
    above chance (1/8)."""
    from mmssl.data import ImageField, build_loader, eval_transform, train_transform
    from mmssl.models.encoders import build_encoder
    from mmssl.recipe_image import RESNET_32PX

    torch.manual_seed(0)
    train = build_loader(str(fashion_shards), [ImageField(train_transform(32))], 64, num_workers=0, seed=0)
    test = next(iter(build_loader(str(fashion_shards), [ImageField(eval_transform(32))], 100, split="test",
                                  shuffle=False, drop_last=False, num_workers=0, rank=0, world_size=1)))["image"]
    model = RelativePosition(build_encoder(RESNET_32PX), crop=0.75, patch_size=16, hidden_dim=256, colour_guard="none")
    train_steps(model, train, 60, lr=1e-3, weight_decay=1e-4)
    model.eval()
    with torch.no_grad():  # 10 draws of pairs from each of the 100 test images
        acc = sum(float(model({"image": test})["accuracy"]) for _ in range(10)) / 10
    print(f"relative position: held-out accuracy {acc:.3f} (chance 0.125)")
    assert acc > 0.2
