"""FixMatch: a confident prediction on a weakly augmented unlabelled image is the hard label for a
strongly augmented view of the same image.

Paper: Sohn et al. 2020, "FixMatch: Simplifying Semi-Supervised Learning with Consistency and
Confidence", https://arxiv.org/abs/2001.07685. Loss (eq. 3, 4): l_s + lambda_u l_u, l_s the
cross-entropy on the labelled images (weak view), l_u `mmssl.losses.pseudo_label_loss` from the weak
to the strong view. Labelled, weak and strong images go through the network as one batch, so
BatchNorm sees them together, as in the paper's code. The EMA of the model is what is evaluated.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..losses import pseudo_label_loss
from .semi_supervised import EMAClassifier, pseudo_label_stats


class FixMatch(nn.Module):
    """backbone `[B,3,H,W] -> [B, D]`; batch `{"labelled": {"image", "label"}, "unlabelled": {"views":
    [weak, strong] (2 x [mu*B,3,H,W]), "label" [mu*B] (-1 unknown)}}` (mmssl.objectives.semi_supervised).

    Args:
        threshold: confidence above which a weak-view prediction becomes a pseudo-label (tau)
        lambda_u: weight of the unlabelled loss
        ema: decay of the evaluated moving average of the model
    """

    strong_view = True  # the unlabelled stream carries a strong view (recipes/semi_supervised.py)

    def __init__(self, backbone: nn.Module, classes: int, threshold: float = 0.95, lambda_u: float = 1.0,
                 ema: float = 0.999):
        super().__init__()
        self.classifier = EMAClassifier(backbone, classes, ema)
        self.threshold, self.lambda_u = threshold, lambda_u

    @property
    def backbone(self) -> nn.Module:
        return self.classifier.backbone

    def forward(self, batch: dict, progress: float = 0.0) -> dict:
        lab, unl = batch["labelled"], batch["unlabelled"]
        weak, strong = unl["views"]
        logits = self.classifier(torch.cat([lab["image"], weak, strong]))
        labelled, weak_logits, strong_logits = logits.split([len(lab["image"]), len(weak), len(strong)])
        supervised = F.cross_entropy(labelled, lab["label"])
        unsupervised, mask, pseudo = pseudo_label_loss(weak_logits, strong_logits, self.threshold)
        return {"loss": supervised + self.lambda_u * unsupervised, "supervised_loss": supervised.detach(),
                "unlabelled_loss": unsupervised.detach(), **pseudo_label_stats(mask, pseudo, weak_logits, unl["label"])}

    def after_step(self, progress: float) -> None:
        self.classifier.update()

    def save_pretrained(self, directory) -> None:
        self.classifier.save_pretrained(directory)
