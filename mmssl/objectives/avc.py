"""Audio-visual correspondence: does this sound belong to this picture?

Two variants share the towers (an image encoder on a frame, an audio encoder on a log-mel):

- `l3`, Look, Listen and Learn (Arandjelovic and Zisserman 2017, https://arxiv.org/abs/1705.08168):
  a binary classifier on the concatenated embeddings. Each frame is paired with its own sound
  (positive) and with the sound of another video of the batch (negative); with `hard_negatives`
  > 0, that share of the negatives is instead the same video's sound at another time
  (`mel_other`, mmssl.data.av). Loss: cross-entropy on the 2N pairs; chance accuracy 50%.
- `avid`, cross-modal InfoNCE in both directions, as AVID (Morgado et al. 2021,
  https://arxiv.org/abs/2004.12943): projected, normalised embeddings; each frame must pick its
  sound among every sound of the global batch and vice versa (gathered across ranks with
  gradients, as CLIP), at a fixed temperature.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import dist
from ..collapse import embedding_std
from ..losses import clip_loss
from ..models.heads import mlp


class AVC(nn.Module):
    """visual: [B, 3, H, W] -> [B, Dv]; audio: [B, 1, n_mels, frames] -> [B, Da]; batch keys
    `image`, `mel` (and `mel_other` for hard negatives)."""

    batch_keys = ("image", "mel")

    def __init__(self, visual: nn.Module, audio: nn.Module, mode: str = "l3", embed_dim: int = 128,
                 hidden_dim: int = 256, temperature: float = 0.07, hard_negatives: float = 0.0):
        super().__init__()
        if mode not in ("l3", "avid"):
            raise ValueError(f"avc.mode must be 'l3' or 'avid', got '{mode}'")
        if not 0.0 <= hard_negatives <= 1.0:
            raise ValueError(f"avc.hard_negatives must be in [0, 1], got {hard_negatives}")
        self.visual, self.audio, self.mode = visual, audio, mode
        self.temperature, self.hard_negatives = temperature, hard_negatives
        if mode == "l3":
            self.fusion = mlp(visual.out_dim + audio.out_dim, hidden_dim, 2, layers=2, norm="none")
        else:
            self.visual_proj = mlp(visual.out_dim, hidden_dim, embed_dim, layers=2)
            self.audio_proj = mlp(audio.out_dim, hidden_dim, embed_dim, layers=2)

    def embed(self, image: torch.Tensor, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`avid`: normalised joint-space embeddings [B, E] of frames and sounds (retrieval)."""
        if self.mode == "l3":  # L3 has no joint space: retrieval ranks by the classifier's score
            raise ValueError("embed() is for avid; use pair_scores() for l3")
        return (F.normalize(self.visual_proj(self.visual(image)), dim=-1),
                F.normalize(self.audio_proj(self.audio(mel)), dim=-1))

    @torch.no_grad()
    def pair_scores(self, image: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        """[N, M] correspondence scores of every frame with every sound (higher = belongs)."""
        if self.mode == "avid":
            v, a = self.embed(image, mel)
            return v @ a.t()
        v, a = self.visual(image), self.audio(mel)
        n, m = v.shape[0], a.shape[0]
        pairs = torch.cat([v[:, None].expand(n, m, -1), a[None].expand(n, m, -1)], -1)
        logits = self.fusion(pairs.flatten(0, 1)).view(n, m, 2)
        return logits[..., 1] - logits[..., 0]

    def forward(self, batch: dict, progress: float = 0.0) -> dict:
        if self.mode == "avid":
            v, a = self.embed(batch["image"], batch["mel"])
            all_v, all_a = dist.gather_with_grad(v), dist.gather_with_grad(a)
            scale = torch.tensor(1.0 / self.temperature, device=v.device)
            loss = clip_loss(v, a, all_v, all_a, scale, dist.row_offset(v.shape[0]))
            acc = ((v @ all_a.t()).argmax(1) == torch.arange(v.shape[0], device=v.device) + dist.row_offset(v.shape[0]))
            return {"loss": loss, "acc": acc.float().mean(), "embed_std": embedding_std(a)}
        v, a = self.visual(batch["image"]), self.audio(batch["mel"])
        b = v.shape[0]
        # Another video's sound: a random non-zero shift of the batch (L3's negatives).
        shift = int(torch.randint(1, b, ())) if b > 1 else 0
        negative = a.roll(shift, 0)
        if self.hard_negatives > 0 and "mel_other" in batch:
            hard = torch.rand(b, device=a.device) < self.hard_negatives
            negative = torch.where(hard[:, None], self.audio(batch["mel_other"]), negative)
        pairs = torch.cat([torch.cat([v, a], 1), torch.cat([v, negative], 1)])
        labels = torch.cat([torch.ones(b), torch.zeros(b)]).long().to(v.device)
        logits = self.fusion(pairs)
        return {"loss": F.cross_entropy(logits, labels), "acc": (logits.argmax(1) == labels).float().mean(),
                "embed_std": embedding_std(a)}
