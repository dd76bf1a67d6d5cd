"""Weighted kNN classification on frozen features (Wu et al. 2018, https://arxiv.org/abs/1805.01978).

Each of the k nearest training features (cosine similarity s) votes for its class with weight
exp(s / T); T = 0.07 as in the paper and in DINO's evaluation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_predict(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor, k: int = 20,
                temperature: float = 0.07, num_classes: int | None = None, chunk: int = 1024) -> torch.Tensor:
    """train [N, D], train_labels [N], test [M, D] -> class scores [M, C]."""
    train, test = F.normalize(train.float(), dim=1), F.normalize(test.float(), dim=1)
    num_classes = num_classes or int(train_labels.max()) + 1
    k = min(k, train.shape[0])
    scores = []
    for start in range(0, test.shape[0], chunk):
        sim = test[start : start + chunk] @ train.t()
        top_sim, top_idx = sim.topk(k, dim=1)
        votes = torch.zeros(sim.shape[0], num_classes)
        votes.scatter_add_(1, train_labels[top_idx], (top_sim / temperature).exp())
        scores.append(votes)
    return torch.cat(scores)


def knn_accuracy(train, train_labels, test, test_labels, ks=(20, 200), temperature=0.07) -> dict:
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    out = {}
    for k in ks:
        scores = knn_predict(train, train_labels, test, k, temperature, num_classes)
        out[f"knn_top1@{k}"] = (scores.argmax(1) == test_labels).float().mean().item()
    out["knn_top1"] = out[f"knn_top1@{ks[0]}"]
    return out
