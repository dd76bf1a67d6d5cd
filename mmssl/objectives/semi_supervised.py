"""What FixMatch (fixmatch.py) and Pseudo-Label (pseudo_label.py) share: a classifier (backbone and
a linear head) trained on the labelled stream, an exponential moving average of it that evaluation
reads and `encoder/` holds, and the paper's diagnostics of the pseudo-labels.

Both train on a batch of two named streams (mmssl.data.ZippedLoaders):
`{"labelled": {"image": [B,3,H,W], "label": [B]}, "unlabelled": {...: [mu*B,3,H,W], "label": [mu*B]}}`,
the unlabelled labels being -1 where the data has none (they are read only for the diagnostics).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..models.ema import ema_update, make_target


class EMAClassifier(nn.Module):
    """backbone `[B,3,H,W] -> [B, D]`, then a linear head `-> [B, classes]`, and a frozen copy whose
    weights follow them by EMA. The decay is warmed up, min(ema, (1 + n) / (10 + n)) after n updates,
    so a short run's average is not dominated by the random initialisation (the paper's 0.999 alone
    keeps 74% of it after 300 steps)."""

    def __init__(self, backbone: nn.Module, classes: int, ema: float = 0.999):
        super().__init__()
        self.net = nn.Sequential(backbone, nn.Linear(backbone.out_dim, classes))
        self.ema, self.decay = make_target(self.net), ema
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @property
    def backbone(self) -> nn.Module:
        return self.net[0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def update(self) -> None:
        n = self.updates.float()
        ema_update(self.ema, self.net, ((1 + n) / (10 + n)).clamp(max=self.decay))
        self.updates += 1

    def save_pretrained(self, directory) -> None:
        """The averaged backbone in its own format (as any run's `encoder/`) and its head as
        `head.safetensors` (`weight` [classes, D], `bias` [classes])."""
        from safetensors.torch import save_file

        self.ema[0].save_pretrained(directory)
        save_file({k: v.contiguous() for k, v in self.ema[1].state_dict().items()}, str(Path(directory) / "head.safetensors"))


def pseudo_label_stats(mask: torch.Tensor, pseudo: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """The paper's diagnostics, as device tensors (no host sync): `mask_rate`, the share of unlabelled
    samples above the threshold; `pseudo_acc`, how many of those pseudo-labels are right among the
    samples whose label is known (0 while none is confident); `unlabelled_acc`, the prediction's
    accuracy on every unlabelled sample with a known label."""
    known = labels >= 0
    confident = mask & known
    right = pseudo == labels
    return {"mask_rate": mask.float().mean(),
            "pseudo_acc": (right & confident).sum() / confident.sum().clamp(min=1),
            "unlabelled_acc": ((logits.argmax(-1) == labels) & known).sum() / known.sum().clamp(min=1)}
