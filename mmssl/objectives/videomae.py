"""VideoMAE: masked video autoencoding with 90% tube masking, in the Hugging Face VideoMAE format.

Paper: Tong et al. 2022, "VideoMAE: Masked Autoencoders are Data-Efficient Learners for
Self-Supervised Video Pre-Training", https://arxiv.org/abs/2203.12602.

Tokens are tubelets of 2 frames x 16 x 16 pixels. The tube mask hides the same spatial patches in
every temporal slot (90% by default), drawn in the model with torch's RNG. The encoder
(`VideoMAEModel`) runs on the visible tokens only; the light decoder gets them plus a mask token at
every hidden position and predicts the pixels of the hidden tubelets. The loss is the MSE to
per-tubelet normalised pixels of hidden tokens only (`losses.videomae_loss`).

The model is transformers' `VideoMAEForPreTraining`, so a `MCG-NJU/videomae-*` checkpoint (Hub id or
local folder, safetensors only) initialises it, and the trained encoder saves as a `VideoMAEModel`
that `AutoModel.from_pretrained` loads. We call its parts rather than its `forward` because that
forward cannot run with nothing masked (the 0% baseline of the benchmark) and un-normalises with
fixed ImageNet statistics; `tests/test_video_objectives.py` checks that our loss equals its loss.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from ..collapse import embedding_std
from ..data.image import IMAGENET_MEAN, IMAGENET_STD
from ..losses import videomae_loss
from ..models.encoders import EncoderSpecError, check_config_keys
from ..models.masking import tube_mask, tubelet_patchify

# ViT-S/16-sized defaults are the GPU config's business; this is what `config: {}` gives.
TINY = {"hidden_size": 192, "num_hidden_layers": 4, "num_attention_heads": 3, "intermediate_size": 768,
        "decoder_hidden_size": 96, "decoder_num_hidden_layers": 2, "decoder_num_attention_heads": 3,
        "decoder_intermediate_size": 384}


def load_videomae(init: str, config: dict, num_frames: int, image_size: int):
    """A `VideoMAEForPreTraining`: from `init` (Hub id or folder of a VideoMAE pre-training model or of
    a bare `VideoMAEModel`, whose decoder then starts fresh), or built from `config` (VideoMAEConfig
    keys) for clips of `num_frames` x `image_size` px."""
    from transformers import VideoMAEConfig, VideoMAEForPreTraining

    if not init:
        check_config_keys(VideoMAEConfig, config, "videomae.config")
        return VideoMAEForPreTraining(VideoMAEConfig(**{**TINY, "tubelet_size": 2, "patch_size": 16, "norm_pix_loss": True,
                                                        **config, "num_frames": num_frames, "image_size": image_size}))
    try:
        model = VideoMAEForPreTraining.from_pretrained(init, use_safetensors=True, trust_remote_code=False)
    except (OSError, ValueError) as exn:
        where = "folder" if os.path.isdir(init) else "Hub id"
        raise EncoderSpecError(f"cannot load VideoMAE '{init}' as a Hugging Face {where} "
                               f"(safetensors only): {str(exn).splitlines()[0]}") from None
    got = (model.config.num_frames, model.config.image_size)
    if got != (num_frames, image_size):
        raise EncoderSpecError(f"VideoMAE '{init}' expects clips of {got[0]} frames at {got[1]} px; "
                               f"set num_frames={got[0]} image_size={got[1]}")
    return model


class VideoMAE(nn.Module):
    """model: a transformers `VideoMAEForPreTraining`; batch `video` [B, T, C, H, W] (ImageNet-normalised)."""

    batch_keys = ("video",)

    def __init__(self, model, mask_ratio: float = 0.9):
        super().__init__()
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        self.model, self.mask_ratio = model, mask_ratio
        c = model.config
        self.tubelet, self.patch, self.norm_pix = c.tubelet_size, c.patch_size, c.norm_pix_loss
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1), persistent=False)

    @property
    def backbone(self):
        """The encoder alone (`VideoMAEModel`), what `encoder/` holds."""
        return self.model.videomae

    def mask(self, video: torch.Tensor, ratio: float) -> torch.Tensor:
        """bool [B, L] tube mask for `video` [B, T, C, H, W]."""
        b, t, _, h, w = video.shape
        return tube_mask(b, t // self.tubelet, (h // self.patch) * (w // self.patch), ratio, video.device)

    def reconstruct(self, video: torch.Tensor, mask_ratio: float | None = None):
        """-> (loss, pred [B, M, t*p*p*C] for the M hidden tokens (all tokens when M = 0 hidden),
        mask bool [B, L], visible tokens [B, L - M, D])."""
        m = self.model
        mask = self.mask(video, self.mask_ratio if mask_ratio is None else mask_ratio)
        visible = m.videomae(video, bool_masked_pos=mask).last_hidden_state  # encoder on visible tokens only
        x = m.encoder_to_decoder(visible)
        b, _, d = x.shape
        pos = m.position_embeddings.to(x).expand(b, -1, -1)
        # Visible tokens first, then hidden ones: each carries its own position, so order is free.
        seq = torch.cat([x + pos[~mask].reshape(b, -1, d), m.mask_token + pos[mask].reshape(b, -1, d)], dim=1)
        hidden = int(mask[0].sum())
        pred = m.decoder(seq, hidden if hidden else seq.shape[1]).logits
        pixels = video * self.std + self.mean
        loss = videomae_loss(pred, tubelet_patchify(pixels, self.tubelet, self.patch), mask, self.norm_pix)
        return loss, pred, mask, visible

    def forward(self, batch: dict, progress: float = 0.0) -> dict:
        loss, _, mask, visible = self.reconstruct(batch["video"])
        return {"loss": loss, "masked_share": mask.float().mean(), "embed_std": embedding_std(visible.mean(1))}

    @torch.no_grad()
    def video_features(self, video: torch.Tensor) -> torch.Tensor:
        """[B, T, C, H, W] -> [B, D]: every token encoded, then averaged (VideoMAE's mean pooling)."""
        return self.backbone(video).last_hidden_state.mean(1)
