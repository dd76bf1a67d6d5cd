"""Context encoder: paint in a hidden region of the image from what surrounds it.

Paper: Pathak et al. 2016, "Context Encoders: Feature Learning by Inpainting",
https://arxiv.org/abs/1604.07379. A region is hidden (set to the mean colour, 0 after
normalisation); the backbone encodes what is left, a fully connected bottleneck and a decoder of
transposed convolutions paint the whole image back, and the loss is the L2 error on the hidden
pixels only (the paper's reconstruction loss; its adversarial term, which sharpens the pictures
but does not help the features, is not included).

Mask shapes (`mask`), which the paper ranks worst to best for the features it learns:
- `center`: the central square of half the side (a quarter of the image);
- `blocks`: squares of a quarter of the side at random places until about `area` is hidden;
- `region`: a random smooth blob covering `area` (low-resolution noise, upsampled, thresholded at
  its own quantile). The paper cuts random shapes out of PASCAL VOC segmentation masks; the blob
  keeps what matters, an irregular region at a random place, without that dataset.
Masks are drawn in the model with torch's RNG, like MAE's.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..collapse import embedding_std
from ..models.heads import ConvDecoder


def center_mask(b: int, s: int, device=None) -> torch.Tensor:
    """[B, 1, S, S] with 1 on the central square of side S / 2."""
    mask = torch.zeros(b, 1, s, s, device=device)
    lo, hi = s // 4, s // 4 + s // 2
    mask[:, :, lo:hi, lo:hi] = 1
    return mask


def block_mask(b: int, s: int, area: float, device=None) -> torch.Tensor:
    """[B, 1, S, S]: squares of side S / 4 at random places, added until `area` of the image is hidden.

    Drawn on the device without a data-dependent loop: 4x as many squares as `area` needs without
    overlap are placed, and each sample keeps the shortest prefix of them that hides `area` (all of
    them in the rare case none does)."""
    side = max(1, s // 4)
    count = 4 * math.ceil(area * s * s / (side * side))
    corner = torch.randint(s - side + 1, (b, count, 2, 1), device=device)  # (y, x) of each square
    cells = torch.arange(s, device=device)
    inside = (cells >= corner) & (cells < corner + side)  # [B, K, 2, S]: rows, then columns, covered
    squares = inside[:, :, 0, :, None] & inside[:, :, 1, None, :]  # [B, K, S, S]
    union = squares.cummax(dim=1).values  # union of the first k squares
    enough = union.flatten(2).float().mean(-1) >= area  # [B, K]
    k = torch.where(enough.any(1), enough.float().argmax(1), torch.full((b,), count - 1, device=device))
    return union[torch.arange(b, device=device), k].float().unsqueeze(1)


def region_mask(b: int, s: int, area: float, device=None) -> torch.Tensor:
    """[B, 1, S, S]: a smooth random blob covering `area` of the image (see the module docstring)."""
    noise = torch.rand(b, 1, max(2, s // 8), max(2, s // 8), device=device)
    smooth = F.interpolate(noise, size=(s, s), mode="bicubic", align_corners=False).flatten(1)
    threshold = smooth.quantile(1 - area, dim=1, keepdim=True)
    return (smooth > threshold).float().view(b, 1, s, s)


MASKS = {"center": lambda b, s, area, device: center_mask(b, s, device), "blocks": block_mask, "region": region_mask}


def inpainting_loss(pred: torch.Tensor, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the hidden pixels: sum(M (pred - x)^2) / (C sum(M)).
    pred, images [B, C, S, S]; mask [B, 1, S, S] with 1 = hidden."""
    return ((pred - images) ** 2 * mask).sum() / (mask.sum() * images.shape[1]).clamp(min=1)


class ContextEncoder(nn.Module):
    """backbone `[B,3,S,S] -> [B, D]`; batch `image` [B, 3, S, S]; a `models.heads.ConvDecoder` paints
    `[B, 3, S, S]` from the D features.

    Args:
        mask: shape of the hidden region: center, blocks or region
        area: share of the image hidden by blocks and region (center hides a quarter)
        decoder_dim: channels of the decoder's first map, halved at each upsampling (at least 32)
    """

    views = "one_image"  # the batch it trains on: mmssl.recipe_image.VIEWS

    def __init__(self, backbone: nn.Module, image_size: int, mask: Literal["center", "blocks", "region"] = "region",
                 area: float = 0.25, decoder_dim: int = 256):
        super().__init__()
        if not 0.0 < area < 1.0:
            raise ValueError(f"area must be in (0, 1), got {area}")
        self.backbone, self.mask_shape, self.area = backbone, mask, area
        self.decoder = ConvDecoder(backbone.out_dim, 3, image_size, decoder_dim)

    def hide(self, images: torch.Tensor) -> torch.Tensor:
        """-> mask [B, 1, S, S] (1 = hidden) of the configured shape."""
        b, _, s, _ = images.shape
        return MASKS[self.mask_shape](b, s, self.area, images.device)

    def paint(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (the image painted back from its visible part [B, 3, S, S], the backbone's features [B, D])."""
        features = self.backbone(images * (1 - mask))
        return self.decoder(features), features

    def forward(self, batch: dict, progress: float = 0.0) -> dict:
        images = batch["image"]
        mask = self.hide(images)
        pred, features = self.paint(images, mask)
        return {"loss": inpainting_loss(pred, images, mask), "hidden_share": mask.mean(),
                "mean_colour_loss": inpainting_loss(torch.zeros_like(images), images, mask).detach(),
                "embed_std": embedding_std(features)}

    @torch.no_grad()
    def reconstruction_grid(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, S, S] -> [N, 3, S, 3S]: original | with the region hidden | the painted region pasted in."""
        mask = self.hide(images)
        pred, _ = self.paint(images, mask)
        return torch.cat([images, images * (1 - mask), images * (1 - mask) + pred * mask], dim=-1)
