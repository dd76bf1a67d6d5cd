"""VideoMAE: masked video autoencoding with 90% tube masking, in the Hugging Face VideoMAE format.

Paper: Tong et al. 2022, "VideoMAE: Masked Autoencoders are Data-Efficient Learners for
Self-Supervised Video Pre-Training", https://arxiv.org/abs/2203.12602.

Tokens are tubelets of 2 frames x 16 x 16 pixels. The tube mask hides the same spatial patches in
every temporal slot (90% by default), drawn in the model with torch's RNG. The encoder
(`VideoMAEModel`) runs on the visible tokens only; the light decoder gets them plus a mask token at
every hidden position and predicts the pixels of the hidden tubelets. The loss is the MSE to
per-tubelet normalised pixels of hidden tokens only (`losses.videomae_loss`). Each step also logs
`zero_loss`, the loss of predicting all zeros (the normalised targets' mean square): a model that
learned nothing sits there, so the loss must fall clearly below it, not merely below its start.

The encoder keeps its final LayerNorm (`use_mean_pooling: false`, as the paper's pre-training
encoder); transformers' default would drop it. Clip features for probes keep time: tokens are
averaged over space within each temporal slot and the slots concatenated in order (`pool: time`),
since a clip's motion lives in the order of its slots; `pool: tokens` averages every token.

The model is transformers' `VideoMAEForPreTraining`, so a `MCG-NJU/videomae-*` checkpoint (Hub id or
local folder, safetensors only) initialises it, and the trained encoder saves as a `VideoMAEModel`
that `AutoModel.from_pretrained` loads. We call its parts rather than its `forward` because that
forward cannot run with nothing masked (the 0% baseline of the benchmark) and un-normalises with
fixed ImageNet statistics; `tests/test_video_objectives.py` checks that our loss equals its loss.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from ..collapse import embedding_std
from ..data.image import IMAGENET_MEAN, IMAGENET_STD
from ..losses import hidden_first, videomae_targets
from ..models.encoders import EncoderSpecError, check_config_keys
from ..models.masking import tube_mask, tubelet_patchify

# ViT-S/16-sized defaults are the GPU config's business; this is what `config: {}` gives.
TINY = {"hidden_size": 192, "num_hidden_layers": 4, "num_attention_heads": 3, "intermediate_size": 768,
        "decoder_hidden_size": 96, "decoder_num_hidden_layers": 2, "decoder_num_attention_heads": 3,
        "decoder_intermediate_size": 384, "use_mean_pooling": False}


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
    """model: a transformers `VideoMAEForPreTraining`; batch `video` [B, T, C, H, W] (ImageNet-normalised).

    Args:
        mask_ratio: share of tube positions hidden from the encoder (the paper's 90%)
        norm_eps: added to each tubelet's std when targets are normalised, in pixel units (the paper: 1e-6; one 8-bit level keeps flat tubelets' noise from becoming the target)
        pool: clip features for probes: time (mean over space per temporal slot, slots concatenated) or tokens (mean of all tokens)
    """

    def __init__(self, model, mask_ratio: float = 0.9, norm_eps: float = 1 / 255,
                 pool: Literal["time", "tokens"] = "time"):
        super().__init__()
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        self.model, self.mask_ratio, self.norm_eps, self.pool = model, mask_ratio, norm_eps, pool
        c = model.config
        self.tubelet, self.patch, self.norm_pix = c.tubelet_size, c.patch_size, c.norm_pix_loss
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1), persistent=False)

    @property
    def backbone(self):
        """The encoder alone (`VideoMAEModel`), what `encoder/` holds."""
        return self.model.videomae

    def save_pretrained(self, directory) -> None:
        """The encoder into `directory` and the whole pretraining model (decoder included, a
        `VideoMAEForPreTraining` to continue from) into `directory/pretraining/`, both by
        transformers in its own format."""
        self.backbone.save_pretrained(str(directory), safe_serialization=True)
        self.model.save_pretrained(str(Path(directory) / "pretraining"), safe_serialization=True)

    def mask(self, video: torch.Tensor, ratio: float) -> torch.Tensor:
        """bool [B, L] tube mask for `video` [B, T, C, H, W]."""
        b, t, _, h, w = video.shape
        return tube_mask(b, t // self.tubelet, (h // self.patch) * (w // self.patch), ratio, video.device)

    def reconstruct(self, video: torch.Tensor, mask_ratio: float | None = None, mask: torch.Tensor | None = None):
        """-> (loss, pred [B, M, t*p*p*C] for the M hidden tokens (all tokens when M = 0 hidden),
        mask bool [B, L], visible tokens [B, L - M, D], the predict-zero loss). `mask` fixes the
        hidden positions (held-out measurements); otherwise one is drawn at `mask_ratio`."""
        m = self.model
        b, t = video.shape[:2]
        if mask is None:
            ratio = self.mask_ratio if mask_ratio is None else mask_ratio
            mask = self.mask(video, ratio)
            hidden = (t // self.tubelet) * int(ratio * (video.shape[-2] // self.patch) * (video.shape[-1] // self.patch))
        else:
            hidden = int(mask[0].sum())  # a given mask: a held-out measurement, not a training step
        # transformers' VideoMAE indexes by the mask inside (a read of the mask the host cannot avoid).
        visible = m.videomae(video, bool_masked_pos=mask).last_hidden_state  # encoder on visible tokens only
        x = m.encoder_to_decoder(visible)
        d = x.shape[-1]
        pos = m.position_embeddings.to(x).expand(b, -1, -1)
        order = hidden_first(mask)
        pos = torch.gather(pos, 1, order[..., None].expand(-1, -1, d))  # hidden positions, then visible ones
        # Visible tokens first, then hidden ones: each carries its own position, so order is free.
        seq = torch.cat([x + pos[:, hidden:], m.mask_token + pos[:, :hidden]], dim=1)
        pred = m.decoder(seq, hidden if hidden else seq.shape[1]).logits
        pixels = video * self.std + self.mean
        target = videomae_targets(tubelet_patchify(pixels, self.tubelet, self.patch), mask, self.norm_pix,
                                  self.norm_eps, hidden=hidden)
        loss = (pred - target).pow(2).mean()
        return loss, pred, mask, visible, target.detach().pow(2).mean()

    def forward(self, batch: dict, progress: float = 0.0) -> dict:
        loss, _, mask, visible, zero_loss = self.reconstruct(batch["video"])
        return {"loss": loss, "zero_loss": zero_loss, "masked_share": mask.float().mean(),
                "embed_std": embedding_std(visible.mean(1))}

    @torch.no_grad()
    def video_features(self, video: torch.Tensor) -> torch.Tensor:
        """[B, T, C, H, W] -> every token encoded, then [B, T/t * D] with `pool: time` (the mean over
        space of each temporal slot, slots in order) or [B, D] with `pool: tokens`."""
        tokens = self.backbone(video).last_hidden_state  # [B, L, D], L = slots x positions, slot-major
        if self.pool == "tokens":
            return tokens.mean(1)
        slots = video.shape[1] // self.tubelet
        return tokens.view(tokens.shape[0], slots, -1, tokens.shape[-1]).mean(2).flatten(1)
