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
from ..models.masking import patchify
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

    def __init__(self, encoder: ViT, decoder_dim: int = 512, decoder_depth: int = 8, decoder_heads: int = 16,
                 mask_ratio: float = 0.75, norm_pix: bool = True):
        super().__init__()
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
