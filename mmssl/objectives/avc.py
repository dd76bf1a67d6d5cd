"""Audio-visual correspondence, L3-Net: does this sound belong to this picture?

Paper: Arandjelovic and Zisserman 2017, "Look, Listen and Learn", https://arxiv.org/abs/1705.08168.
An image encoder embeds a frame, an audio encoder the log-mel of the sound around it, and a
binary classifier on the concatenation says whether they belong together. Each frame is paired
with its own sound (positive) and with the sound of another video of the batch (negative); with
`hard_negatives` > 0, that share of the negatives is instead the same video's sound at another
time (`mel_other`, mmssl.data.av). Loss: cross-entropy on the 2N pairs; chance accuracy 50%.
The contrastive variant is `objectives/avid.py`.
"""
from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from torch import nn

from ..collapse import embedding_std
from ..models.heads import mlp
from ..models.serialization import save_towers


class L3(nn.Module):
    """visual: [B, 3, H, W] -> [B, Dv]; audio: [B, 1, n_mels, frames] -> [B, Da]; batch keys
    `image`, `mel` (and `mel_other` for hard negatives)."""

    def __init__(self, visual: nn.Module, audio: nn.Module, hidden_dim: int = 256, hard_negatives: float = 0.0):
        super().__init__()
        if not 0.0 <= hard_negatives <= 1.0:
            raise ValueError(f"avc.hard_negatives must be in [0, 1], got {hard_negatives}")
        self.visual, self.audio, self.hard_negatives = visual, audio, hard_negatives
        self.fusion = mlp(visual.out_dim + audio.out_dim, hidden_dim, 2, layers=2, norm="none")

    @torch.no_grad()
    def pair_scores(self, image: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        """[N, M] correspondence scores of every frame with every sound: the classifier's logit
        margin for "belongs" (L3 has no joint space, so retrieval ranks by it)."""
        v, a = self.visual(image), self.audio(mel)
        n, m = v.shape[0], a.shape[0]
        pairs = torch.cat([v[:, None].expand(n, m, -1), a[None].expand(n, m, -1)], -1)
        logits = self.fusion(pairs.flatten(0, 1)).view(n, m, 2)
        return logits[..., 1] - logits[..., 0]

    def forward(self, batch: dict, progress: float = 0.0) -> dict:
        v, a = self.visual(batch["image"]), self.audio(batch["mel"])
        b = v.shape[0]
        # Another video's sound: a random non-zero shift of the batch (L3's negatives).
        shift = random.randrange(1, b) if b > 1 else 0  # Python's generator: nothing read from the device
        negative = a.roll(shift, 0)
        if self.hard_negatives > 0 and "mel_other" in batch:
            hard = torch.rand(b, device=a.device) < self.hard_negatives
            negative = torch.where(hard[:, None], self.audio(batch["mel_other"]), negative)
        pairs = torch.cat([torch.cat([v, a], 1), torch.cat([v, negative], 1)])
        labels = torch.cat([torch.ones(b), torch.zeros(b)]).long().to(v.device)
        logits = self.fusion(pairs)
        return {"loss": F.cross_entropy(logits, labels), "acc": (logits.argmax(1) == labels).float().mean(),
                "embed_std": embedding_std(a)}

    def save_pretrained(self, directory) -> None:
        """`directory/visual/` and `directory/audio/`, each tower in its own format."""
        save_towers(directory, {"visual": self.visual, "audio": self.audio})
