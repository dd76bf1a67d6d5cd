"""Linear probe: multinomial logistic regression on frozen, standardised features."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def linear_probe(train, train_labels, test, test_labels, epochs: int = 300, lr: float = 0.1,
                 weight_decay: float = 1e-4, seed: int = 0) -> dict:
    """Full-batch AdamW on cross-entropy. train [N, D], test [M, D] -> {"linear_top1", "linear_train_top1"}."""
    gen = torch.Generator().manual_seed(seed)
    mean, std = train.mean(0, keepdim=True), train.std(0, keepdim=True).clamp(min=1e-6)
    x, xt = (train - mean) / std, (test - mean) / std
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    layer = torch.nn.Linear(x.shape[1], num_classes)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * 0.01)
        layer.bias.zero_()
    opt = torch.optim.AdamW(layer.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    with torch.enable_grad():
        for _ in range(epochs):
            opt.zero_grad()
            F.cross_entropy(layer(x), train_labels).backward()
            opt.step()
            sched.step()
    with torch.no_grad():
        return {"linear_top1": (layer(xt).argmax(1) == test_labels).float().mean().item(),
                "linear_train_top1": (layer(x).argmax(1) == train_labels).float().mean().item()}
