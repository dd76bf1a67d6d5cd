"""Zero-shot classification from label names with prompt templates (CLIP, Radford et al. 2021)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

TEMPLATES = ("a photo of a {}.", "a picture of a {}.", "an image of {}.", "{}")


def readable(label: str) -> str:
    return label.replace("_", " ").replace("-", " ")


@torch.no_grad()
def class_embeddings(embed_texts, class_names: list[str], templates=TEMPLATES) -> torch.Tensor:
    """embed_texts(list of str) -> [n, E]. Returns [C, E]: the normalised mean over templates."""
    rows = []
    for name in class_names:
        e = F.normalize(embed_texts([t.format(readable(name)) for t in templates]).float(), dim=1)
        rows.append(F.normalize(e.mean(0), dim=0))
    return torch.stack(rows)


def zero_shot_accuracy(image: torch.Tensor, labels: torch.Tensor, classes: torch.Tensor) -> dict:
    """image [N, E], labels [N], classes [C, E] -> top-1 and top-5 accuracy."""
    scores = F.normalize(image.float(), dim=1) @ classes.t()
    top5 = scores.topk(min(5, classes.shape[0]), dim=1).indices
    return {"zero_shot_top1": (top5[:, 0] == labels).float().mean().item(),
            "zero_shot_top5": (top5 == labels.unsqueeze(1)).any(1).float().mean().item()}
