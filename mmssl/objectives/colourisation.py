"""Colourisation: predict an image's colours (Lab ab) from its lightness (Lab L).

Paper: Zhang, Isola and Efros 2016, "Colorful Image Colorization", https://arxiv.org/abs/1603.08511.
The backbone sees only the L channel (models.colour.LightnessEncoder, which the saved encoder keeps,
so probes feed it lightness too). A decoder predicts, at a quarter of the input's resolution:
- `loss: classification` (the paper's): a distribution over the in-gamut ab bins of width 10
  (models.colour.ab_gamut; 262 here, 313 in the paper), trained with cross-entropy against the
  soft-encoded truth (its 5 nearest bins, Gaussian weights sigma 5) and class rebalancing: each
  pixel weighs 1 / ((1 - lambda) p~ + lambda / Q) of its nearest bin, p~ the empirical bin prior
  smoothed with a Gaussian (sigma 5) and lambda = `rebalance` (0.5), normalised so the expected
  weight is 1. The paper measures the prior on ImageNet beforehand; here it is counted over the
  training batches seen so far (all ranks), so it settles as training goes. The picture is the
  annealed mean of the distribution (temperature 0.38).
- `loss: regression`: ab directly, L2, the paper's baseline that gives greyish pictures.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .. import dist
from ..collapse import embedding_std
from ..models.colour import LightnessEncoder, ab_gamut, lab_to_rgb, rgb_to_lab
from ..models.heads import ConvDecoder

NEIGHBOURS, SIGMA = 5, 5.0  # the paper's soft encoding


def soft_encode(ab: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """ab [N, 2] -> [N, Q]: weights on the 5 nearest bins, exp(-d^2 / 2 sigma^2), summing to 1."""
    d2 = torch.cdist(ab, bins) ** 2
    near, idx = d2.topk(NEIGHBOURS, dim=1, largest=False)
    w = torch.exp(-near / (2 * SIGMA ** 2))
    return torch.zeros_like(d2).scatter_(1, idx, w / w.sum(1, keepdim=True))


def rebalancing_weights(prior: torch.Tensor, bins: torch.Tensor, lam: float) -> torch.Tensor:
    """[Q] w = 1 / ((1 - lam) p~ + lam / Q), p~ the prior smoothed over ab with a Gaussian of sigma
    5, scaled so that sum_q p~_q w_q = 1 (the paper's eq. 4)."""
    kernel = torch.exp(-torch.cdist(bins, bins) ** 2 / (2 * SIGMA ** 2))
    smooth = kernel @ prior
    smooth = smooth / smooth.sum()
    w = 1.0 / ((1 - lam) * smooth + lam / len(bins))
    return w / (smooth * w).sum()


def colourisation_loss(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """logits [N, Q], soft target Z [N, Q], class weights [Q] -> the paper's eq. 2:
    -(1/N) sum_n w[argmax_q Z_nq] sum_q Z_nq log softmax(logits_n)_q."""
    per_pixel = -(target * F.log_softmax(logits, dim=1)).sum(1)
    return (weights[target.argmax(1)] * per_pixel).mean()


def annealed_mean(logits: torch.Tensor, bins: torch.Tensor, temperature: float = 0.38) -> torch.Tensor:
    """logits [B, Q, h, w] -> ab [B, 2, h, w]: the mean of softmax(logits / T) (the paper's H)."""
    return torch.einsum("bqhw,qc->bchw", (logits / temperature).softmax(1), bins)


class Colourisation(nn.Module):
    """backbone `[B,3,S,S] -> [B, D]` (wrapped to read lightness); batch `image` [B, 3, S, S]
    (normalised RGB); predicts ab on an S/4 x S/4 grid.

    Args:
        loss: classification over ab bins with rebalancing (the paper), or regression of ab (L2)
        rebalance: lambda, the share of the uniform distribution mixed into the prior
        temperature: of the annealed mean that turns a distribution into a colour
        decoder_dim: channels of the decoder's first map
    """

    views = "one_image"  # the batch it trains on: mmssl.recipe_image.VIEWS

    def __init__(self, backbone: nn.Module, image_size: int,
                 loss: Literal["classification", "regression"] = "classification", rebalance: float = 0.5,
                 temperature: float = 0.38, decoder_dim: int = 256):
        super().__init__()
        if image_size % 32:
            raise ValueError(f"colourisation predicts on a quarter-size grid: image_size must be a multiple of 32, "
                             f"got {image_size}")
        self.backbone = LightnessEncoder(backbone)
        self.loss_kind, self.rebalance, self.temperature = loss, rebalance, temperature
        self.register_buffer("bins", ab_gamut())
        self.register_buffer("counts", torch.zeros(len(self.bins)))  # nearest-bin counts of the pixels seen
        out = len(self.bins) if loss == "classification" else 2
        self.decoder = ConvDecoder(backbone.out_dim, out, image_size // 4, decoder_dim)

    def targets(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (Lab at full size [B, 3, S, S], ab averaged to the output grid [B, 2, S/4, S/4])."""
        b = self.backbone
        lab = rgb_to_lab((images * b.std + b.mean).clamp(0, 1))
        return lab, F.avg_pool2d(lab[:, 1:], 4)

    def predict_ab(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (the decoder's output [B, Q or 2, S/4, S/4], the backbone's features [B, D])."""
        features = self.backbone(images)
        return self.decoder(features), features

    def forward(self, batch: dict, progress: float = 0.0) -> dict:
        _, ab = self.targets(batch["image"])
        out, features = self.predict_ab(batch["image"])
        flat_ab = ab.permute(0, 2, 3, 1).reshape(-1, 2)
        if self.loss_kind == "regression":
            pred = out * 100  # ab spans about +-110: the decoder works near unit scale
            loss = F.mse_loss(pred, ab) / 100 ** 2
        else:
            with torch.no_grad():
                target = soft_encode(flat_ab, self.bins)
                self.counts += dist.all_reduce_sum(torch.bincount(target.argmax(1), minlength=len(self.bins)).float())
                prior = self.counts / self.counts.sum()
                weights = rebalancing_weights(prior, self.bins, self.rebalance)
            logits = out.permute(0, 2, 3, 1).reshape(-1, len(self.bins))
            loss = colourisation_loss(logits, target, weights)
            pred = annealed_mean(out, self.bins, self.temperature)
        error = (pred.detach() - ab).norm(dim=1).mean()  # mean ab distance, comparable across the two losses
        return {"loss": loss, "ab_error": error, "embed_std": embedding_std(features)}

    @torch.no_grad()
    def colourise(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised RGB [B, 3, S, S] -> the predicted colour picture, normalised RGB, from L alone."""
        lab, _ = self.targets(images)
        out, _ = self.predict_ab(images)
        ab = out * 100 if self.loss_kind == "regression" else annealed_mean(out, self.bins, self.temperature)
        ab = F.interpolate(ab, size=images.shape[-2:], mode="bilinear", align_corners=False)
        rgb = lab_to_rgb(torch.cat([lab[:, :1], ab], 1))
        return (rgb - self.backbone.mean) / self.backbone.std

    @torch.no_grad()
    def reconstruction_grid(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, S, S] -> [N, 3, S, 3S]: grey input | colourised | original."""
        return torch.cat([self.backbone.lightness(images), self.colourise(images), images], dim=-1)
