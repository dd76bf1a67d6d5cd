"""DINO: self-distillation with no labels, a student matching a momentum teacher across crops.

Paper: Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers",
https://arxiv.org/abs/2104.14294. The student sees every crop (2 global + N local), the teacher
only the global ones. The teacher output is centred (a running mean of its batch outputs,
all-reduced across ranks) and sharpened by a low temperature that warms up linearly over the
first `teacher_temp_warmup` of training. The teacher is the EMA of the student.
"""
from __future__ import annotations

import torch
from torch import nn

from .. import dist
from ..collapse import embedding_std
from ..losses import dino_loss
from ..models.ema import ema_update, make_target
from ..models.heads import DINOHead
from ..models.multicrop import forward_views
from ..optim import cosine_schedule


class DINO(nn.Module):
    """backbone `[B,3,H,W] -> [B, D]`; head `D -> out_dim`; batch `views`: n_global crops, then local crops.

    Args:
        out_dim: prototypes of the DINO head (its output width)
        hidden_dim: hidden width of the head
        bottleneck_dim: bottleneck width before the weight-normalised last layer
        n_global: global crops (the teacher sees only these)
        student_temp: student softmax temperature
        teacher_temp: teacher softmax temperature after warmup
        warmup_teacher_temp: teacher temperature at the start
        teacher_temp_warmup: share of training over which the teacher temperature warms up
        center_momentum: EMA momentum of the teacher-output centre
        momentum: starting EMA momentum of the teacher (rises to 1 on a cosine)
    """

    views = "multi_crop"  # the batch it trains on: mmssl.recipe_image.VIEWS

    def __init__(self, backbone: nn.Module, out_dim: int = 65536, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 n_global: int = 2, student_temp: float = 0.1, teacher_temp: float = 0.04,
                 warmup_teacher_temp: float = 0.04, teacher_temp_warmup: float = 0.1, center_momentum: float = 0.9,
                 momentum: float = 0.996):
        super().__init__()
        self.student = nn.Sequential(backbone, DINOHead(backbone.out_dim, out_dim, hidden_dim, bottleneck_dim))
        self.teacher = make_target(self.student)
        self.register_buffer("center", torch.zeros(out_dim))
        self.n_global, self.student_temp = n_global, student_temp
        self.teacher_temp, self.warmup_teacher_temp, self.teacher_temp_warmup = teacher_temp, warmup_teacher_temp, teacher_temp_warmup
        self.center_momentum, self.momentum = center_momentum, momentum

    @property
    def backbone(self) -> nn.Module:
        return self.student[0]

    def teacher_temperature(self, progress: float) -> float:
        """Linear warm-up from `warmup_teacher_temp` to `teacher_temp`, then constant."""
        if self.teacher_temp_warmup <= 0 or progress >= self.teacher_temp_warmup:
            return self.teacher_temp
        return self.warmup_teacher_temp + (self.teacher_temp - self.warmup_teacher_temp) * progress / self.teacher_temp_warmup

    def forward(self, batch: dict, progress: float = 0.0) -> dict:
        views = batch["views"]
        student_out = forward_views(self.student, views)
        with torch.no_grad():
            teacher_out = self.teacher(torch.cat(views[: self.n_global])).chunk(self.n_global)
        t_temp = self.teacher_temperature(progress)
        loss = dino_loss(student_out, list(teacher_out), self.center, self.student_temp, t_temp)
        with torch.no_grad():
            # Each pair's cross-entropy is H(teacher) + KL(teacher || student), and every teacher view is
            # in the same number of pairs: the loss minus the mean teacher entropy is the mean KL. The
            # paper (Fig. 7) watches both: entropy near 0 or near log K is collapse, KL falls as it learns.
            probs = torch.softmax((torch.cat(teacher_out) - self.center) / t_temp, dim=-1)
            entropy = -(probs * probs.clamp(min=1e-12).log()).sum(-1).mean()
        self.update_center(torch.cat(teacher_out))
        return {"loss": loss, "teacher_entropy": entropy, "kl": loss.detach() - entropy, "teacher_temp": t_temp,
                "embed_std": embedding_std(teacher_out[0])}

    @torch.no_grad()
    def update_center(self, teacher_logits: torch.Tensor) -> None:
        """center <- m * center + (1 - m) * mean of the teacher outputs over the global batch."""
        batch_mean = dist.all_reduce_mean(teacher_logits.float().mean(dim=0))
        self.center.mul_(self.center_momentum).add_(batch_mean, alpha=1.0 - self.center_momentum)

    def after_step(self, progress: float) -> None:
        ema_update(self.teacher, self.student, cosine_schedule(progress, self.momentum, 1.0))
