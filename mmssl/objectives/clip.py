"""CLIP: contrastive image-text pre-training.

Paper: Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
Supervision", https://arxiv.org/abs/2103.00020. Optional sigmoid loss: Zhai et al. 2023, "Sigmoid
Loss for Language Image Pre-Training", https://arxiv.org/abs/2303.15343. Locked text or image
tower (LiT): Zhai et al. 2022, https://arxiv.org/abs/2111.07991.

Each tower is an encoder `[B, D_tower]` followed by a linear projection to the joint space `[B, E]`.
Embeddings are L2-normalised and gathered from every rank with gradients, so the negatives of a
pair are the whole global batch.
"""
from __future__ import annotations

from typing import Literal

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import dist
from ..losses import clip_loss, siglip_loss
from ..models.serialization import save_towers


class CLIP(nn.Module):
    """Two towers, two projections, a learnable temperature.

    Args:
        image_encoder: `[B,3,H,W] -> [B, D_i]` with `.out_dim`.
        text_encoder: `(input_ids [B,L], attention_mask [B,L]) -> [B, D_t]` with `.out_dim`.
        embed_dim: width E of the joint space.
        init_temperature: starting softmax temperature t (0.07, the paper's; 1/t is learned, at most 100)
        loss: "clip" (softmax, symmetric) or "siglip" (pairwise sigmoid, learned bias init -10).
    """

    def __init__(self, image_encoder: nn.Module, text_encoder: nn.Module, embed_dim: int = 256,
                 init_temperature: float = 0.07, max_logit_scale: float = 100.0, loss: Literal["clip", "siglip"] = "clip"):
        super().__init__()
        if loss not in ("clip", "siglip"):
            raise ValueError(f"CLIP loss must be 'clip' or 'siglip', got '{loss}'")
        self.image_encoder, self.text_encoder = image_encoder, text_encoder
        self.image_proj = nn.Linear(image_encoder.out_dim, embed_dim, bias=False)
        self.text_proj = nn.Linear(text_encoder.out_dim, embed_dim, bias=False)
        init_scale = 10.0 if loss == "siglip" else 1.0 / init_temperature
        self.logit_scale = nn.Parameter(torch.tensor(math.log(init_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(-10.0)) if loss == "siglip" else None
        self.max_log_scale = math.log(max_logit_scale)
        self.loss_name = loss

    def embed_image(self, image: torch.Tensor) -> torch.Tensor:
        """`[B,3,H,W] -> [B, E]`, unit norm."""
        return F.normalize(self.image_proj(self.image_encoder(image)), dim=-1)

    def embed_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """`[B, L], [B, L] -> [B, E]`, unit norm."""
        return F.normalize(self.text_proj(self.text_encoder(input_ids, attention_mask)), dim=-1)

    def forward(self, batch: dict, progress: float = 0.0) -> dict:
        img = self.embed_image(batch["image"])
        txt = self.embed_text(batch["input_ids"], batch["attention_mask"])
        all_img, all_txt = dist.gather_with_grad(img), dist.gather_with_grad(txt)
        offset = dist.row_offset(img.shape[0])
        scale = self.logit_scale.clamp(max=self.max_log_scale).exp()
        if self.loss_name == "clip":
            loss = clip_loss(img, txt, all_img, all_txt, scale, offset)
        else:
            loss = siglip_loss(img, all_txt, scale, self.logit_bias, offset, global_batch=img.shape[0])
        with torch.no_grad():
            acc = (img @ all_txt.t()).argmax(1).eq(torch.arange(img.shape[0], device=img.device) + offset).float().mean()
        return {"loss": loss, "logit_scale": scale.detach(), "batch_acc": acc}

    def save_pretrained(self, directory) -> None:
        """`directory/image/` and `directory/text/` (each tower in its own format, see
        models.encoders) and `directory/heads.safetensors` (projections and logit scale)."""
        from safetensors.torch import save_file

        directory = save_towers(directory, {"image": self.image_encoder, "text": self.text_encoder})
        heads = {"image_proj.weight": self.image_proj.weight, "text_proj.weight": self.text_proj.weight,
                 "logit_scale": self.logit_scale}
        save_file({k: v.detach().cpu().contiguous() for k, v in heads.items()}, str(directory / "heads.safetensors"))
