"""Linear probe: multinomial logistic regression on frozen, standardised features."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _logistic(x: torch.Tensor, labels: torch.Tensor, classes: int, epochs: int, lr: float, weight_decay: float,
              seed: int, label_smoothing: float = 0.0) -> torch.nn.Linear:
    """Full-batch AdamW on cross-entropy, cosine schedule; x [N, D] (standardised) -> Linear(D, classes)."""
    gen = torch.Generator().manual_seed(seed)
    layer = torch.nn.Linear(x.shape[1], classes)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * 0.01)
        layer.bias.zero_()
    opt = torch.optim.AdamW(layer.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    with torch.enable_grad():
        for _ in range(epochs):
            opt.zero_grad()
            F.cross_entropy(layer(x), labels, label_smoothing=label_smoothing).backward()
            opt.step()
            sched.step()
    return layer


def _standardise(train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return train.mean(0, keepdim=True), train.std(0, keepdim=True).clamp(min=1e-6)


def linear_probe(train, train_labels, test, test_labels, epochs: int = 300, lr: float = 0.1,
                 weight_decay: float = 1e-4, seed: int = 0) -> dict:
    """train [N, D], test [M, D] -> {"linear_top1", "linear_train_top1"}."""
    mean, std = _standardise(train)
    x, xt = (train - mean) / std, (test - mean) / std
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    layer = _logistic(x, train_labels, num_classes, epochs, lr, weight_decay, seed)
    with torch.no_grad():
        return {"linear_top1": (layer(xt).argmax(1) == test_labels).float().mean().item(),
                "linear_train_top1": (layer(x).argmax(1) == train_labels).float().mean().item()}


def probe_head(features: torch.Tensor, labels: torch.Tensor, classes: int, epochs: int = 300, lr: float = 0.1,
               weight_decay: float = 1e-4, seed: int = 0, label_smoothing: float = 0.0) -> torch.nn.Linear:
    """The linear probe as a layer on the raw features [N, D] -> [N, classes]: the standardisation is
    folded into its weights, so it can stand in for a classifier's head. With `label_smoothing`, the
    probe minimises the smoothed cross-entropy a fine-tuning run goes on to minimise: on separable
    features plain cross-entropy has no minimum and the probe's logits grow without bound, which
    the smoothed loss then pulls back down through the encoder."""
    mean, std = _standardise(features)
    layer = _logistic((features - mean) / std, labels, classes, epochs, lr, weight_decay, seed, label_smoothing)
    head = torch.nn.Linear(features.shape[1], classes)
    with torch.no_grad():
        head.weight.copy_(layer.weight / std)
        head.bias.copy_(layer.bias - (layer.weight * (mean / std)).sum(1))
    return head
