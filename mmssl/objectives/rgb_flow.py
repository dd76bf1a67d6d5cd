"""RGB-flow correspondence: a clip's frames and its optical flow as two views of one instance.

Paper: Tian et al. 2020, "Contrastive Multiview Coding", https://arxiv.org/abs/1906.05849 (its
RGB and optical-flow views of video). An RGB encoder reads a few frames of the clip in time order
(their features concatenated), a flow encoder reads the stacked flow fields (`data.flow.FlowField`);
both are projected to a joint space, L2-normalised, and each clip's frames must pick its own flow
among every flow of the global batch, and back (symmetric InfoNCE, `losses.clip_loss`). The flow
carries the motion, so the RGB side learns what in the frames predicts how the scene moves.
Probes read the RGB encoder as the temporal-order models do: `eval_frames` evenly spaced frames,
concatenated in order.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import dist
from ..collapse import embedding_std
from ..losses import clip_loss
from ..models.heads import mlp
from .frame_tuples import ordered_frame_features


class RGBFlow(nn.Module):
    """rgb: a frame encoder [N, 3, H, W] -> [N, D]; flow: an encoder of stacked flow [B, 2P, H, W]
    -> [B, Df]; batch keys `video` [B, T, 3, H, W] and `flow` [B, 2P, H, W].

    Args:
        eval_frames: frames of a clip read by the RGB side (in training and in probes), concatenated in order
        embed_dim: joint space width
        hidden_dim: width of the projection heads
        temperature: InfoNCE temperature
    """

    def __init__(self, rgb: nn.Module, flow: nn.Module, eval_frames: int = 4, embed_dim: int = 128,
                 hidden_dim: int = 256, temperature: float = 0.07):
        super().__init__()
        self.backbone, self.flow, self.eval_frames, self.temperature = rgb, flow, eval_frames, temperature
        self.rgb_proj = mlp(eval_frames * rgb.out_dim, hidden_dim, embed_dim, layers=2)
        self.flow_proj = mlp(flow.out_dim, hidden_dim, embed_dim, layers=2)

    def embed(self, video: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit-length joint-space embeddings [B, E] of the frames and of the flow."""
        rgb = ordered_frame_features(self.backbone, video, self.eval_frames)
        return F.normalize(self.rgb_proj(rgb), dim=-1), F.normalize(self.flow_proj(self.flow(flow)), dim=-1)

    def forward(self, batch: dict, progress: float = 0.0) -> dict:
        r, f = self.embed(batch["video"], batch["flow"])
        all_r, all_f = dist.gather_with_grad(r), dist.gather_with_grad(f)
        offset = dist.row_offset(r.shape[0])
        loss = clip_loss(r, f, all_r, all_f, torch.tensor(1.0 / self.temperature, device=r.device), offset)
        acc = (r @ all_f.t()).argmax(1) == torch.arange(r.shape[0], device=r.device) + offset
        return {"loss": loss, "acc": acc.float().mean(), "embed_std": embedding_std(r)}

    @torch.no_grad()
    def video_features(self, video: torch.Tensor) -> torch.Tensor:
        """[B, T, C, H, W] -> [B, eval_frames * D]: the RGB encoder on evenly spaced frames, in order."""
        return ordered_frame_features(self.backbone, video, self.eval_frames)
