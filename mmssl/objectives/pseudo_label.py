"""Pseudo-Label: the network's own confident predictions on unlabelled images are trained on as if
they were labels.

Paper: Lee 2013, "Pseudo-Label: The Simple and Efficient Semi-Supervised Learning Method for Deep
Neural Networks" (ICML workshop on challenges in representation learning),
http://deeplearning.net/wp-content/uploads/2013/03/pseudo_label_final.pdf.
Loss: l_s + alpha(t) l_u, alpha rising linearly from 0 to `weight` over the first `rampup` of
training (the paper's alpha(t) schedule). As in the FixMatch paper's Pseudo-Label baseline, the
pseudo-label is kept only above a confidence `threshold` (0 keeps every one, as Lee did), and
prediction and target are the same weak view: no strong augmentation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..losses import pseudo_label_loss
from .semi_supervised import EMAClassifier, pseudo_label_stats


class PseudoLabel(nn.Module):
    """backbone `[B,3,H,W] -> [B, D]`; batch `{"labelled": {"image", "label"}, "unlabelled": {"image"
    [mu*B,3,H,W], "label" [mu*B] (-1 unknown)}}` (mmssl.objectives.semi_supervised).

    Args:
        threshold: confidence above which a prediction becomes a pseudo-label
        weight: final weight of the unlabelled loss (alpha_f)
        rampup: share of training over which that weight rises from 0
        ema: decay of the evaluated moving average of the model
    """

    strong_view = False

    def __init__(self, backbone: nn.Module, classes: int, threshold: float = 0.95, weight: float = 1.0,
                 rampup: float = 0.2, ema: float = 0.999):
        super().__init__()
        self.classifier = EMAClassifier(backbone, classes, ema)
        self.threshold, self.weight, self.rampup = threshold, weight, rampup

    @property
    def backbone(self) -> nn.Module:
        return self.classifier.backbone

    def forward(self, batch: dict, progress: float = 0.0) -> dict:
        lab, unl = batch["labelled"], batch["unlabelled"]
        logits = self.classifier(torch.cat([lab["image"], unl["image"]]))
        labelled, unlabelled = logits.split([len(lab["image"]), len(unl["image"])])
        supervised = F.cross_entropy(labelled, lab["label"])
        unsupervised, mask, pseudo = pseudo_label_loss(unlabelled, unlabelled, self.threshold)
        alpha = self.weight * min(1.0, progress / self.rampup) if self.rampup > 0 else self.weight
        return {"loss": supervised + alpha * unsupervised, "supervised_loss": supervised.detach(),
                "unlabelled_loss": unsupervised.detach(), "alpha": alpha,
                **pseudo_label_stats(mask, pseudo, unlabelled, unl["label"])}

    def after_step(self, progress: float) -> None:
        self.classifier.update()

    def save_pretrained(self, directory) -> None:
        self.classifier.save_pretrained(directory)
