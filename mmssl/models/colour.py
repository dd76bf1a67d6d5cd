"""CIE Lab for colourisation: sRGB (D65) to Lab and back, the quantised ab gamut, and the input
conversion a colourisation-trained encoder needs (it has only ever seen lightness).

Formulas: IEC 61966-2-1 (sRGB transfer curve and primaries) and CIE 1976 L*a*b*, with the D65
white point, as scikit-image and the colourisation paper's code use them.
"""
from __future__ import annotations

import torch
from torch import nn

from ..data.image import IMAGENET_MEAN, IMAGENET_STD

RGB_TO_XYZ = torch.tensor([[0.412453, 0.357580, 0.180423],
                           [0.212671, 0.715160, 0.072169],
                           [0.019334, 0.119193, 0.950227]])
WHITE = torch.tensor([0.95047, 1.0, 1.08883])  # D65
DELTA = 6 / 29


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """[..., 3, H, W] sRGB in [0, 1] -> Lab (L in [0, 100], a and b about [-110, 110])."""
    lin = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb.clamp(min=0) + 0.055) / 1.055) ** 2.4)
    xyz = torch.einsum("ij,...jhw->...ihw", RGB_TO_XYZ.to(rgb), lin) / WHITE.to(rgb).view(3, 1, 1)
    f = torch.where(xyz > DELTA ** 3, xyz.clamp(min=1e-12) ** (1 / 3), xyz / (3 * DELTA ** 2) + 4 / 29)
    fx, fy, fz = f.unbind(-3)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=-3)


def lab_to_rgb(lab: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """[..., 3, H, W] Lab -> sRGB, clamped to [0, 1] unless `clamp=False` (to test the gamut)."""
    L, a, b = lab.unbind(-3)
    fy = (L + 16) / 116
    f = torch.stack([fy + a / 500, fy, fy - b / 200], dim=-3)
    xyz = torch.where(f > DELTA, f ** 3, 3 * DELTA ** 2 * (f - 4 / 29)) * WHITE.to(lab).view(3, 1, 1)
    lin = torch.einsum("ij,...jhw->...ihw", torch.linalg.inv(RGB_TO_XYZ).to(lab), xyz)
    rgb = torch.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin.clamp(min=0) ** (1 / 2.4) - 0.055)
    return rgb.clamp(0, 1) if clamp else rgb


def ab_gamut(grid: int = 10) -> torch.Tensor:
    """[Q, 2] the centres (multiples of `grid`) of the ab bins that hold a displayable sRGB colour:
    some point of the bin (its centre, edges or corners) at some lightness maps inside [0, 1]^3.
    With grid 10 that is 262 bins; the paper quotes 313, the bins its ImageNet conversion reached."""
    centres = torch.arange(-110, 111, grid, dtype=torch.float64)
    a, b = torch.meshgrid(centres, centres, indexing="ij")
    ab = torch.stack([a.flatten(), b.flatten()], 1)  # [K, 2]
    off = torch.tensor([-grid / 2, 0.0, grid / 2], dtype=torch.float64)
    oa, ob = torch.meshgrid(off, off, indexing="ij")
    points = (ab[:, None] + torch.stack([oa.flatten(), ob.flatten()], 1)[None]).reshape(-1, 2)  # [K * 9, 2]
    lightness = torch.linspace(0, 100, 101, dtype=torch.float64)
    n = len(lightness)
    lab = torch.stack([lightness[:, None].expand(-1, len(points)), points[:, 0].expand(n, -1),
                       points[:, 1].expand(n, -1)], 1).unsqueeze(-1)  # [n, 3, K * 9, 1]
    rgb = lab_to_rgb(lab, clamp=False).squeeze(-1)
    inside = ((rgb >= 0) & (rgb <= 1)).all(1).any(0).view(len(ab), -1).any(1)
    return ab[inside].float()


# What a folder's encoder was trained to read, where that is not the image itself.
INPUT_META = "mmssl_input.json"


class LightnessEncoder(nn.Module):
    """An encoder that has only seen lightness (colourisation): normalised RGB `[B, 3, H, W]` ->
    the grey image of its Lab L channel, normalised as the RGB was -> `encoder` -> `[B, D]`.

    Probes, fine-tuning and other recipes then feed it what it was trained on from ordinary images.
    `save_pretrained` writes the encoder in its own format plus `mmssl_input.json`, which
    mmssl.models.encoders.build_encoder reads to put this conversion back in front of it."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder, self.out_dim = encoder, encoder.out_dim
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def lightness(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised RGB -> the normalised grey image of L / 100, `[B, 3, H, W]`."""
        lab = rgb_to_lab((images * self.std + self.mean).clamp(0, 1))
        return (lab[:, :1].expand(-1, 3, -1, -1) / 100 - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.lightness(images))

    def save_pretrained(self, directory) -> None:
        import json
        from pathlib import Path

        self.encoder.save_pretrained(directory)
        (Path(directory) / INPUT_META).write_text(json.dumps(
            {"input": "lab_lightness", "note": "trained on the Lab L channel of sRGB images, as a grey 3-channel "
             "image (L / 100 in every channel, then the image processor's normalisation); "
             "mmssl.models.encoders.build_encoder applies this conversion itself"}))
