"""Image <-> text retrieval recall at k, with several captions per image (the COCO protocol) and
ties that cannot flatter.

Pairs: row i of `image` and row i of `text` come from one sample; `groups[i]` names the image the
sample's caption belongs to (its `image_id`), so rows that share it are captions of one image. The
images are the distinct groups. Image -> text: a hit at k when any caption of the image ranks in
the top k. Text -> image: a hit at k when the caption's own image ranks in the top k.

Ties. Scores within `tol` of each other are ties, broken at random; a query scores the probability
that a tie-break puts a true item in the top k. A collapsed model whose scores are all equal thus
scores chance (k / candidates), not 100%: ranking by "items strictly above" would count it a hit.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def tie_aware_hits(scores: torch.Tensor, positive: torch.Tensor, k: int, tol: float = 1e-6) -> torch.Tensor:
    """scores [Q, C], positive [Q, C] bool (at least one per row) -> [Q] probability that a random
    tie-break ranks a positive within the top k."""
    best = scores.masked_fill(~positive, float("-inf")).max(1, keepdim=True).values
    above = (scores > best + tol) & ~positive
    tied = ((scores - best).abs() <= tol)
    g = above.sum(1).double()  # negatives strictly above the best positive
    t = (tied & ~positive).sum(1).double()  # negatives tied with it
    m = (tied & positive).sum(1).double()  # positives tied with it (>= 1)
    r = (k - g).clamp(min=0)  # top-k places left for the tied block
    # P(no positive among the first r of t + m tied items) = C(t, r) / C(t + m, r), for r <= t.
    rr = torch.minimum(r, t)
    log_miss = (torch.lgamma(t + 1) - torch.lgamma(t - rr + 1) - torch.lgamma(t + m + 1) + torch.lgamma(t + m - rr + 1))
    hit = 1 - log_miss.exp()
    return torch.where(r <= 0, torch.zeros_like(hit), torch.where(r > t, torch.ones_like(hit), hit))


@torch.no_grad()
def recall_at_k(image: torch.Tensor, text: torch.Tensor, ks=(1, 5, 10), names=("image", "text"),
                groups: list | None = None) -> dict:
    """image [N, E], text [N, E] (row i: one sample), groups: N image ids (None: every row its own
    image) -> {"image_to_text_R@k", "text_to_image_R@k", "retrieval_images", "retrieval_texts"}."""
    n = image.shape[0]
    groups = list(range(n)) if groups is None else list(groups)
    first_row: dict = {}  # image id -> the first row that shows it (all its rows show the same image)
    for i, g in enumerate(groups):
        first_row.setdefault(g, i)
    index = {g: j for j, g in enumerate(first_row)}
    owner = torch.tensor([index[g] for g in groups], dtype=torch.long)  # text i -> its image
    rows = torch.tensor(list(first_row.values()), dtype=torch.long)
    sim = F.normalize(image[rows].float(), dim=1) @ F.normalize(text.float(), dim=1).t()  # [images, texts]
    positive = owner.unsqueeze(0) == torch.arange(len(rows)).unsqueeze(1)  # image m owns text n
    a, b = names
    out = {}
    for k in ks:
        out[f"{a}_to_{b}_R@{k}"] = tie_aware_hits(sim, positive, k).mean().item()
        out[f"{b}_to_{a}_R@{k}"] = tie_aware_hits(sim.t(), positive.t(), k).mean().item()
    out["retrieval_images"], out["retrieval_texts"] = len(rows), n
    return out


@torch.no_grad()
def recall_from_scores(sim: torch.Tensor, ks=(1, 5, 10), names=("image", "text")) -> dict:
    """sim [N, N], row i = item i of the first kind scored against every item of the second (pair i
    is row i with column i) -> {"<a>_to_<b>_R@k", "<b>_to_<a>_R@k"}. For models that score pairs
    without a joint space (L3-Net's classifier). Ties as in `tie_aware_hits`."""
    positive = torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
    a, b = names
    out = {}
    for direction, s in ((f"{a}_to_{b}", sim), (f"{b}_to_{a}", sim.t())):
        for k in ks:
            out[f"{direction}_R@{k}"] = tie_aware_hits(s.float(), positive, k).mean().item()
    return out


def chance_recall(n: int, ks=(1, 5, 10)) -> dict:
    return {f"R@{k}": min(1.0, k / n) for k in ks}
