"""CPC: contrastive predictive coding over a sequence, for audio waveforms and for video frames.

Paper: van den Oord et al. 2018, "Representation Learning with Contrastive Predictive Coding",
https://arxiv.org/abs/1807.03748. An encoder g_enc turns the input into a sequence z_1..z_T; a GRU
g_ar summarises z_1..z_t into a context c_t; a linear map W_k per step k = 1..K guesses z_{t+k}
from c_t. InfoNCE (`losses.cpc_loss`) scores each guess against every z at the same offset in the
batch: its own future is the positive, other time steps and other sequences are the negatives.

The same objective runs on audio (g_enc = `models.audio.WaveEncoder` on raw waveform, one step
per 10 ms) and on video (g_enc = `FrameSequence`: an image encoder on every frame). Features for
probes are the contexts c_t averaged over time, as the paper's linear probes use c.

Audio windows carry `audio_samples`, the number of real samples before zero padding (the field
trims leading and trailing silence first). Steps past it are padding: they are neither targets nor
negatives, and the probe's average leaves them out; otherwise every padded step encodes the same
vector, and a guess's positive equals its own sequence's negatives.
"""
from __future__ import annotations

import torch
from torch import nn

from ..collapse import embedding_std
from ..losses import cpc_loss


class FrameSequence(nn.Module):
    """An image encoder applied to every frame: video [B, T, C, H, W] -> sequence [B, T, D]."""

    def __init__(self, frame_encoder: nn.Module):
        super().__init__()
        self.frame_encoder, self.out_dim = frame_encoder, frame_encoder.out_dim

    def sequence(self, video: torch.Tensor) -> torch.Tensor:
        b, t = video.shape[:2]
        return self.frame_encoder(video.flatten(0, 1)).view(b, t, -1)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.sequence(video).mean(1)

    def save_pretrained(self, directory) -> None:
        self.frame_encoder.save_pretrained(directory)


class CPC(nn.Module):
    """encoder: `.sequence(x) -> [B, T, D]` and `.out_dim`; batch[key] is its input (`audio`
    [B, samples] or `video` [B, T, C, H, W]).

    Args:
        context_dim: width of the autoregressive context (GRU)
        steps: future steps predicted from each context
        key: batch key of the input sequence (audio or video)
    """

    def __init__(self, encoder: nn.Module, context_dim: int = 256, steps: int = 12, key: str = "audio"):
        super().__init__()
        if steps < 1:
            raise ValueError(f"cpc.steps must be >= 1, got {steps}")
        self.backbone, self.steps, self.key = encoder, steps, key
        self.context = nn.GRU(encoder.out_dim, context_dim, batch_first=True)
        self.predictors = nn.ModuleList(nn.Linear(context_dim, encoder.out_dim) for _ in range(steps))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (z [B, T, D], c [B, T, context_dim])."""
        z = self.backbone.sequence(x)
        c, _ = self.context(z)
        return z, c

    def valid_steps(self, samples: torch.Tensor | None, steps: int) -> torch.Tensor | None:
        """samples [B] real input samples -> bool [B, steps]: step t ends within them (None: all
        steps are signal, as for video frames)."""
        hop = getattr(self.backbone, "hop", None)
        if samples is None or hop is None:
            return None
        ends = (torch.arange(steps, device=samples.device) + 1) * hop
        return ends.unsqueeze(0) <= samples.unsqueeze(1)

    def forward(self, batch: dict, progress: float = 0.0) -> dict:
        z, c = self.encode(batch[self.key])
        t = z.shape[1]
        if t <= self.steps:
            raise ValueError(f"CPC needs sequences longer than cpc.steps={self.steps}; got {t} steps "
                             "(use longer clips or fewer steps)")
        valid = self.valid_steps(batch.get(f"{self.key}_samples"), t)
        preds = [w(c[:, : t - k]) for k, w in enumerate(self.predictors, start=1)]
        loss, acc = cpc_loss(z, preds, valid)
        out = {"loss": loss, "acc": acc, "embed_std": embedding_std(self.pool(c, valid))}
        if valid is not None:
            out["valid_share"] = valid.float().mean()
        return out

    @staticmethod
    def pool(seq: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        """[B, T, D] -> [B, D]: the mean over the valid steps (all where `valid` is None)."""
        if valid is None:
            return seq.mean(1)
        w = valid.unsqueeze(-1).to(seq.dtype)
        return (seq * w).sum(1) / w.sum(1).clamp(min=1)

    @torch.no_grad()
    def features(self, x: torch.Tensor, samples: torch.Tensor | None = None) -> torch.Tensor:
        """[B, ...] (and the real samples [B] of audio windows) -> [B, context_dim]: the context c_t
        averaged over the steps that hold signal."""
        c = self.encode(x)[1]
        return self.pool(c, self.valid_steps(samples, c.shape[1]))
