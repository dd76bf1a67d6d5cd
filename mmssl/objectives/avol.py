"""Sound-source localisation: which part of the picture makes this sound?

Papers: Arandjelovic and Zisserman 2018, "Objects that Sound", https://arxiv.org/abs/1712.06651
(AVOL-Net: a visual tower that keeps its spatial map, a sound embedding compared with every
location, the pair's score the maximum over locations, multiple-instance learning); trained here
with the cross-modal InfoNCE of AVID (Morgado et al. 2021, https://arxiv.org/abs/2004.12943) over
those max-pooled scores, in place of AVOL-Net's binary classifier.

Each location's visual feature (a 1x1 projection of the last conv map) and the sound's embedding
are L2-normalised in a joint space; `heatmap` is their cosine similarity at every location. A
frame must pick its own sound among every sound of the global batch by its best location, and
each sound its frame. Evaluated by pointing: on a grid of several held-out pictures, the peak of
the heat map for one picture's sound must land inside that picture (`eval.av_tasks.pointing`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import dist
from ..collapse import embedding_std
from ..losses import max_location_infonce
from ..models.heads import mlp
from ..models.serialization import save_towers


class AVOL(nn.Module):
    """visual: an encoder with `spatial(image [B, 3, H, W]) -> [B, Dv, h, w]`; audio: [B, 1, n_mels,
    frames] -> [B, Da]; batch keys `image`, `mel`.

    Args:
        embed_dim: joint space width
        hidden_dim: width of the sound's projection head
        temperature: InfoNCE temperature
    """

    def __init__(self, visual: nn.Module, audio: nn.Module, embed_dim: int = 128, hidden_dim: int = 256,
                 temperature: float = 0.07):
        super().__init__()
        if not hasattr(visual, "spatial"):
            raise ValueError("sound localisation needs a visual encoder with a spatial feature map (a conv backbone)")
        self.visual, self.audio, self.temperature = visual, audio, temperature
        self.visual_proj = nn.Conv2d(visual.out_dim, embed_dim, 1)
        self.audio_proj = mlp(audio.out_dim, hidden_dim, embed_dim, layers=2)

    def embed(self, image: torch.Tensor, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (per-location visual embeddings [B, E, h, w], sound embeddings [B, E]), unit length."""
        return (F.normalize(self.visual_proj(self.visual.spatial(image)), dim=1),
                F.normalize(self.audio_proj(self.audio(mel)), dim=-1))

    @staticmethod
    def location_scores(v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """v [N, E, h, w], a [M, E] -> [N, M, h, w]: cosine of every location with every sound."""
        return torch.einsum("nehw,me->nmhw", v, a)

    @torch.no_grad()
    def heatmap(self, image: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        """[B, h, w]: each picture's locations scored against its own sound (row b with sound b)."""
        v, a = self.embed(image, mel)
        return torch.einsum("behw,be->bhw", v, a)

    @torch.no_grad()
    def pair_scores(self, image: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        """[N, M]: every frame's best location against every sound (retrieval)."""
        v, a = self.embed(image, mel)
        return self.location_scores(v, a).flatten(2).amax(-1)

    def forward(self, batch: dict, progress: float = 0.0) -> dict:
        v, a = self.embed(batch["image"], batch["mel"])
        loss, acc = max_location_infonce(v, a, dist.gather_with_grad(v), dist.gather_with_grad(a), self.temperature,
                                         dist.row_offset(v.shape[0]))
        return {"loss": loss, "acc": acc, "embed_std": embedding_std(a)}

    def save_pretrained(self, directory) -> None:
        """`directory/visual/` and `directory/audio/`, each tower in its own format."""
        save_towers(directory, {"visual": self.visual, "audio": self.audio})
