"""Losses as pure functions of embeddings. Shapes are in each docstring.

Distributed convention (as open_clip's local loss): a rank passes its own rows (`B` local) and the
columns gathered from every rank (`N = world * B`), plus `offset = rank * B`, the index of its
first row among the columns. Averaging the per-rank losses (which DDP does to the gradients) then
equals the loss of one process over the full batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(query: torch.Tensor, keys: torch.Tensor, temperature: float, offset: int = 0) -> torch.Tensor:
    """InfoNCE (van den Oord et al. 2018, https://arxiv.org/abs/1807.03748).

    query [B, D] and keys [N, D], L2-normalised; the positive of query i is key `offset + i`, every
    other key is a negative. Returns mean_i -log softmax_j(q_i . k_j / t)[offset + i].
    """
    logits = query @ keys.t() / temperature
    target = torch.arange(query.shape[0], device=query.device) + offset
    return F.cross_entropy(logits, target)


def clip_loss(image: torch.Tensor, text: torch.Tensor, all_image: torch.Tensor, all_text: torch.Tensor,
              logit_scale: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """Symmetric InfoNCE of CLIP (Radford et al. 2021, https://arxiv.org/abs/2103.00020).

    image, text: [B, D] this rank's normalised embeddings; all_image, all_text: [N, D] gathered
    from every rank (equal to image, text in one process); logit_scale: scalar, 1/temperature.
    Returns (CE(image -> all texts) + CE(text -> all images)) / 2 over this rank's rows.
    """
    target = torch.arange(image.shape[0], device=image.device) + offset
    logits_per_image = logit_scale * image @ all_text.t()
    logits_per_text = logit_scale * text @ all_image.t()
    return 0.5 * (F.cross_entropy(logits_per_image, target) + F.cross_entropy(logits_per_text, target))


def siglip_loss(image: torch.Tensor, all_text: torch.Tensor, logit_scale: torch.Tensor, logit_bias: torch.Tensor,
                offset: int = 0, global_batch: int | None = None) -> torch.Tensor:
    """Pairwise sigmoid loss of SigLIP (Zhai et al. 2023, https://arxiv.org/abs/2303.15343).

    image [B, D] local, all_text [N, D] gathered, both normalised. With z_ij = +1 for matching
    pairs and -1 otherwise: -1/|batch| sum_i sum_j log sigmoid(z_ij (t x_i . y_j + b)).
    `global_batch` is |batch| (N by default); with B local rows per rank, averaging ranks gives
    the full-batch loss when it is passed as B.
    """
    logits = logit_scale * image @ all_text.t() + logit_bias
    labels = -torch.ones_like(logits)
    idx = torch.arange(image.shape[0], device=image.device)
    labels[idx, idx + offset] = 1.0
    return -F.logsigmoid(labels * logits).sum() / (global_batch or image.shape[0])
