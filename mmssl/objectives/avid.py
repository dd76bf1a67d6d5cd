"""Audio-visual instance discrimination: cross-modal InfoNCE between frames and their sounds.

Paper: Morgado et al. 2021, "Audio-Visual Instance Discrimination with Cross-Modal Agreement",
https://arxiv.org/abs/2004.12943 (its cross-modal term). Frames and sounds are projected to a
joint space and L2-normalised; each frame must pick its own sound among every sound of the
global batch and each sound its frame, at a fixed temperature. Embeddings are gathered across
ranks with gradients, as in CLIP, so 2 processes see the same negatives as one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import dist
from ..collapse import embedding_std
from ..losses import clip_loss
from ..models.heads import mlp
from ..models.serialization import save_towers


class AVID(nn.Module):
    """visual: [B, 3, H, W] -> [B, Dv]; audio: [B, 1, n_mels, frames] -> [B, Da]; batch keys `image`, `mel`."""

    def __init__(self, visual: nn.Module, audio: nn.Module, embed_dim: int = 128, hidden_dim: int = 256,
                 temperature: float = 0.07):
        super().__init__()
        self.visual, self.audio, self.temperature = visual, audio, temperature
        self.visual_proj = mlp(visual.out_dim, hidden_dim, embed_dim, layers=2)
        self.audio_proj = mlp(audio.out_dim, hidden_dim, embed_dim, layers=2)

    def embed(self, image: torch.Tensor, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised joint-space embeddings [B, E] of frames and sounds."""
        return (F.normalize(self.visual_proj(self.visual(image)), dim=-1),
                F.normalize(self.audio_proj(self.audio(mel)), dim=-1))

    @torch.no_grad()
    def pair_scores(self, image: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        """[N, M] cosine similarities of every frame with every sound (retrieval)."""
        v, a = self.embed(image, mel)
        return v @ a.t()

    def forward(self, batch: dict, progress: float = 0.0) -> dict:
        v, a = self.embed(batch["image"], batch["mel"])
        all_v, all_a = dist.gather_with_grad(v), dist.gather_with_grad(a)
        offset = dist.row_offset(v.shape[0])
        scale = torch.tensor(1.0 / self.temperature, device=v.device)
        loss = clip_loss(v, a, all_v, all_a, scale, offset)
        acc = (v @ all_a.t()).argmax(1) == torch.arange(v.shape[0], device=v.device) + offset
        return {"loss": loss, "acc": acc.float().mean(), "embed_std": embedding_std(a)}

    def save_pretrained(self, directory) -> None:
        """`directory/visual/` and `directory/audio/`, each tower in its own format."""
        save_towers(directory, {"visual": self.visual, "audio": self.audio})
