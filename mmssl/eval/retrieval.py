"""Image <-> text retrieval recall at k over paired embeddings (pair i is image i with text i)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def recall_at_k(image: torch.Tensor, text: torch.Tensor, ks=(1, 5, 10), names=("image", "text")) -> dict:
    """image [N, E], text [N, E] -> {"image_to_text_R@k", "text_to_image_R@k"} for each k.

    A query counts as found at k when its own partner ranks among the k most similar items.
    """
    sim = F.normalize(image.float(), dim=1) @ F.normalize(text.float(), dim=1).t()
    return recall_from_scores(sim, ks, names)


@torch.no_grad()
def recall_from_scores(sim: torch.Tensor, ks=(1, 5, 10), names=("image", "text")) -> dict:
    """sim [N, N], row i = item i of the first kind scored against every item of the second (pair i
    is row i with column i) -> {"<a>_to_<b>_R@k", "<b>_to_<a>_R@k"}. For models that score pairs
    without a joint space (L3-Net's classifier)."""
    n = sim.shape[0]
    target = torch.arange(n, device=sim.device)
    a, b = names
    out = {}
    for direction, s in ((f"{a}_to_{b}", sim), (f"{b}_to_{a}", sim.t())):
        # rank of the true partner: how many items score strictly higher
        true = s[target, target].unsqueeze(1)
        rank = (s > true).sum(1)
        for k in ks:
            out[f"{direction}_R@{k}"] = (rank < k).float().mean().item()
    return out


def chance_recall(n: int, ks=(1, 5, 10)) -> dict:
    return {f"R@{k}": min(1.0, k / n) for k in ks}
