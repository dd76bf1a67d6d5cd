"""MAE: masked autoencoders; the encoder sees only the visible patches.

Paper: He et al. 2021, "Masked Autoencoders Are Scalable Vision Learners",
https://arxiv.org/abs/2111.06377. 75% of the patches are hidden at random (in the model, with
torch's RNG). The ViT encoder runs on the visible 25% only; a light decoder gets the encoded
visible tokens plus a shared mask token at every hidden position, and predicts pixels. The loss is
the MSE to per-patch normalised pixels, on hidden patches only.
"""
from __future__ import annotations

import torch
from torch import nn

from ..collapse import embedding_std
from ..losses import masked_patch_mse
from ..models.masking import patchify, unpatchify
from ..models.vit import ViT, blocks, sincos_2d


class MAE(nn.Module):
    """encoder: a `models.vit.ViT`; batch `image` [B, C, S, S] -> loss on [B, (S/p)^2, p*p*C] patches.

    Args:
        decoder_dim: decoder token width
        decoder_depth: decoder blocks
        decoder_heads: decoder attention heads
        mask_ratio: share of patches hidden from the encoder
        norm_pix: targets are per-patch normalised pixels
    """

    views = "one_image"  # the batch it trains on: mmssl.recipe_image.VIEWS
    # The backbone it is built for, the driver's default `backbone`: mmssl's ViT at the demo's 32 px.
    default_backbone = {"name": "mmssl_vit", "config": {"image_size": 32, "patch_size": 4, "dim": 192, "depth": 6,
                                                        "heads": 3}}

    def __init__(self, encoder: ViT, decoder_dim: int = 512, decoder_depth: int = 8, decoder_heads: int = 16,
                 mask_ratio: float = 0.75, norm_pix: bool = True):
        super().__init__()
        if not isinstance(encoder, ViT):
            raise ValueError(f"MAE needs mmssl's ViT as its backbone (backbone.name: mmssl_vit), not {type(encoder).__name__}")
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        self.backbone, self.mask_ratio, self.norm_pix = encoder, mask_ratio, norm_pix
        p, c = encoder.patch_size, encoder.config["in_chans"]
        grid = encoder.config["image_size"] // p
        self.decoder_embed = nn.Linear(encoder.out_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.register_buffer("decoder_pos", sincos_2d(decoder_dim, grid), persistent=False)
        self.decoder = blocks(decoder_dim, decoder_depth, decoder_heads)
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, p * p * c)
        nn.init.normal_(self.mask_token, std=0.02)

    def reconstruct(self, images: torch.Tensor, mask_ratio: float | None = None):
        """-> (loss, pred [B, L, p*p*C] in normalised-patch units if norm_pix, mask [B, L] with 1 = hidden,
        latent [B, 1 + keep, D] the encoded visible tokens)."""
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        latent, mask, ids_restore = self.backbone.tokens(images, ratio)  # [B, 1 + keep, D]
        x = self.decoder_embed(latent)
        b, length = mask.shape
        hidden = self.mask_token.expand(b, length + 1 - x.shape[1], -1)
        seq = torch.cat([x[:, 1:], hidden], dim=1)  # visible first, then hidden: the shuffled order
        seq = torch.gather(seq, 1, ids_restore.unsqueeze(-1).expand(-1, -1, seq.shape[-1]))  # original order
        x = torch.cat([x[:, :1], seq + self.decoder_pos], dim=1)
        for blk in self.decoder:
            x = blk(x)
        pred = self.decoder_pred(self.decoder_norm(x))[:, 1:]
        loss = masked_patch_mse(pred, patchify(images, self.backbone.patch_size), mask, self.norm_pix)
        return loss, pred, mask, latent

    def forward(self, batch: dict, progress: float = 0.0) -> dict:
        loss, _, mask, latent = self.reconstruct(batch["image"])
        return {"loss": loss, "masked_share": mask.mean(), "embed_std": embedding_std(latent[:, 1:].mean(1))}

    @torch.no_grad()
    def reconstruction_grid(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, S, S] -> [N, 3, S, 3S]: original | masked (hidden patches grey) | reconstruction with
        the visible patches pasted back. A norm_pix prediction is put back in pixel units with each
        target patch's own mean and variance, as in the MAE paper's figures."""
        p, s = self.backbone.patch_size, images.shape[-1]
        _, pred, mask, _ = self.reconstruct(images)
        patches = patchify(images, p)
        if self.norm_pix:
            mean, var = patches.mean(-1, keepdim=True), patches.var(-1, keepdim=True)
            pred = pred * (var + 1e-6).sqrt() + mean
        m = mask.unsqueeze(-1)
        masked = unpatchify(patches * (1 - m), p, 3, s, s)
        recon = unpatchify(patches * (1 - m) + pred * m, p, 3, s, s)
        return torch.cat([images, masked, recon], dim=-1)
