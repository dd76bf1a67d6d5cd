"""Losses as pure functions of embeddings. Shapes are in each docstring.

Distributed convention (as open_clip's local loss): a rank passes its own rows (`B` local) and the
columns gathered from every rank (`N = world * B`), plus `offset = rank * B`, the index of its
first row among the columns. Averaging the per-rank losses (which DDP does to the gradients) then
equals the loss of one process over the full batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import dist


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


def max_location_infonce(v: torch.Tensor, a: torch.Tensor, all_v: torch.Tensor, all_a: torch.Tensor,
                         temperature: float, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-modal InfoNCE over multiple-instance scores, for sound-source localisation (the
    max-over-locations score of Arandjelovic and Zisserman 2018, https://arxiv.org/abs/1712.06651).

    v [B, E, h, w] this rank's per-location visual embeddings, a [B, E] its sound embeddings, all
    unit length; all_v, all_a gathered from every rank. The score of frame i and sound j is
    max over locations (y, x) of v_i(y, x) . a_j. Returns ((CE(frame -> all sounds) + CE(sound ->
    all frames)) / 2 at 1/temperature, the frame -> sound top-1 accuracy), over this rank's rows.
    """
    target = torch.arange(v.shape[0], device=v.device) + offset
    frame_to_sound = torch.einsum("nehw,me->nmhw", v, all_a).flatten(2).amax(-1) / temperature
    sound_to_frame = torch.einsum("nehw,me->mnhw", all_v, a).flatten(2).amax(-1) / temperature
    loss = 0.5 * (F.cross_entropy(frame_to_sound, target) + F.cross_entropy(sound_to_frame, target))
    return loss, (frame_to_sound.argmax(1) == target).float().mean()


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


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, all_z1: torch.Tensor, all_z2: torch.Tensor, temperature: float,
            offset: int = 0) -> torch.Tensor:
    """NT-Xent of SimCLR (Chen et al. 2020, https://arxiv.org/abs/2002.05709) over 2N views.

    z1, z2: [B, D] this rank's two views, L2-normalised; all_z1, all_z2: [N, D] gathered. For view
    i of the first set, the positive is view i of the second; the negatives are the other 2N - 2
    views (both sets, itself excluded). Returns the mean over this rank's 2B anchors.
    """
    b = z1.shape[0]
    keys = torch.cat([all_z1, all_z2])  # [2N, D]
    n = all_z1.shape[0]
    idx = torch.arange(b, device=z1.device) + offset
    anchors = torch.cat([z1, z2])  # [2B, D]
    logits = anchors @ keys.t() / temperature
    self_mask = torch.zeros_like(logits, dtype=torch.bool)
    self_mask[torch.arange(b), idx] = True
    self_mask[torch.arange(b) + b, idx + n] = True
    logits = logits.masked_fill(self_mask, float("-inf"))
    target = torch.cat([idx + n, idx])
    return F.cross_entropy(logits, target)


def moco_loss(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """MoCo's InfoNCE (He et al. 2020, https://arxiv.org/abs/1911.05722): q, k [B, D] normalised
    queries and their keys (from the momentum encoder, detached), queue [K, D] negatives.
    mean_i -log( exp(q_i.k_i/t) / (exp(q_i.k_i/t) + sum_j exp(q_i.queue_j/t)) )."""
    pos = (q * k.detach()).sum(dim=1, keepdim=True)
    neg = q @ queue.detach().t()
    logits = torch.cat([pos, neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


def neg_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Negative cosine similarity with stop-gradient on z (SimSiam, Chen & He 2021,
    https://arxiv.org/abs/2011.10566; BYOL's loss is 2 + 2 x this). p, z: [B, D] -> scalar."""
    return -F.cosine_similarity(p, z.detach(), dim=-1).mean()


def barlow_twins(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 5e-3) -> torch.Tensor:
    """Barlow Twins (Zbontar et al. 2021, https://arxiv.org/abs/2103.03230).

    z1, z2: [N, D] (the global batch). C = cross-correlation of the batch-standardised views,
    loss = sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2.
    """
    n = z1.shape[0]
    a = (z1 - z1.mean(0)) / z1.std(0, unbiased=False).clamp(min=1e-6)
    b = (z2 - z2.mean(0)) / z2.std(0, unbiased=False).clamp(min=1e-6)
    c = a.t() @ b / n
    on = (torch.diagonal(c) - 1).pow(2).sum()
    off = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
    return on + lambd * off


def vicreg(z1: torch.Tensor, z2: torch.Tensor, sim_weight: float = 25.0, var_weight: float = 25.0,
           cov_weight: float = 1.0, gamma: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """VICReg (Bardes et al. 2022, https://arxiv.org/abs/2105.04906). z1, z2: [N, D] -> scalar.

    invariance: mean squared distance; variance: mean over dims of relu(gamma - sqrt(var + eps));
    covariance: sum of squared off-diagonal covariances / D; each view's terms summed.
    """
    n, d = z1.shape
    inv = F.mse_loss(z1, z2)

    def var_cov(z):
        z = z - z.mean(0)
        std = torch.sqrt(z.var(0) + eps)
        cov = z.t() @ z / (n - 1)
        off = cov.pow(2).sum() - torch.diagonal(cov).pow(2).sum()
        return F.relu(gamma - std).mean(), off / d

    v1, c1 = var_cov(z1)
    v2, c2 = var_cov(z2)
    return sim_weight * inv + var_weight * (v1 + v2) + cov_weight * (c1 + c2)


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL (Grill et al. 2020, https://arxiv.org/abs/2006.07733): mean_i ||p_i/|p_i| - z_i/|z_i|||^2
    = 2 - 2 cos(p_i, z_i), with the target z detached. p, z: [B, D] -> scalar."""
    return 2.0 + 2.0 * neg_cosine(p, z)


def dino_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], center: torch.Tensor,
              student_temp: float, teacher_temp: float) -> torch.Tensor:
    """DINO (Caron et al. 2021, https://arxiv.org/abs/2104.14294).

    student: V_s tensors [B, K] (global crops first, then local); teacher: V_t tensors [B, K] of the
    global crops; center [K]. The teacher distribution is softmax((t - center) / teacher_temp),
    detached; the loss averages H(P_t(view a), P_s(view b)) = -sum_k P_t log P_s over every pair
    with a != b, and over the batch.
    """
    targets = [F.softmax((t.detach() - center) / teacher_temp, dim=-1) for t in teacher]
    logps = [F.log_softmax(s / student_temp, dim=-1) for s in student]
    total, pairs = 0.0, 0
    for a, q in enumerate(targets):
        for b, logp in enumerate(logps):
            if a == b:
                continue
            total = total + (-(q * logp).sum(-1)).mean()
            pairs += 1
    return total / pairs


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iters: int = 3) -> torch.Tensor:
    """Sinkhorn-Knopp equipartition of SwAV (Caron et al. 2020, https://arxiv.org/abs/2006.09882).

    scores [B, K] (this rank's rows of prototype similarities) -> codes Q [B, K]: each row sums to 1,
    and over the global batch each prototype gets an equal share (column sums B_global / K). The
    sums run over every rank through mmssl.dist, so codes are those of the global batch.
    """
    # Scores are cosine similarities in [-1, 1], so exp(score / epsilon) stays finite without a shift
    # (a per-rank max shift would weight ranks differently); half precision is lifted to float32.
    s = scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores
    q = torch.exp(s / epsilon).t()  # [K, B]
    k = q.shape[0]
    b = q.shape[1] * dist.world_size()
    q /= dist.all_reduce_sum(q.sum().clone())
    for _ in range(iters):
        q /= dist.all_reduce_sum(q.sum(dim=1, keepdim=True).clone())  # prototype marginals -> 1/K
        q /= k
        q /= q.sum(dim=0, keepdim=True)  # sample marginals -> 1/B
        q /= b
    return (q * b).t()


def swav_loss(scores: list[torch.Tensor], codes: list[torch.Tensor], temperature: float = 0.1) -> torch.Tensor:
    """SwAV swapped prediction: scores, V tensors [B, K] (every crop); codes, one [B, K] per crop
    that has codes (the global crops, first). For code i and every crop j != i:
    -sum_k q_i log softmax(scores_j / t), averaged over pairs and batch."""
    total, pairs = 0.0, 0
    for i, q in enumerate(codes):
        for j, s in enumerate(scores):
            if i == j:
                continue
            total = total + (-(q * F.log_softmax(s / temperature, dim=-1)).sum(-1)).mean()
            pairs += 1
    return total / pairs


def supcon_loss(z: torch.Tensor, labels: torch.Tensor, all_z: torch.Tensor, all_labels: torch.Tensor,
                temperature: float = 0.1, offset: int = 0) -> torch.Tensor:
    """Supervised contrastive loss L^sup_out (Khosla et al. 2020, https://arxiv.org/abs/2004.11362).

    z [B, D] this rank's anchors (every view, normalised), labels [B]; all_z [N, D], all_labels [N]
    gathered, with anchor i at column offset + i. For anchor i with positives P(i) (same label,
    not itself) and A(i) every column but itself:
    -1/|P(i)| sum_{p in P(i)} log( exp(z_i.z_p/t) / sum_{a in A(i)} exp(z_i.z_a/t) ).
    Anchors without positives are left out.
    """
    logits = z @ all_z.t() / temperature
    idx = torch.arange(z.shape[0], device=z.device)
    self_mask = torch.zeros_like(logits, dtype=torch.bool)
    self_mask[idx, idx + offset] = True
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    pos = (labels[:, None] == all_labels[None, :]) & ~self_mask
    n_pos = pos.sum(1)
    per_anchor = -(log_prob.masked_fill(~pos, 0.0)).sum(1) / n_pos.clamp(min=1)
    # An anchor without positives adds 0 and is not counted (no branch on the data: nothing is read
    # back from the device); with none at all the loss is 0 and still part of the graph.
    return per_anchor.sum() / (n_pos > 0).sum().clamp(min=1)


def masked_patch_mse(pred: torch.Tensor, patches: torch.Tensor, mask: torch.Tensor, norm_pix: bool = True) -> torch.Tensor:
    """MAE's reconstruction loss (He et al. 2021, https://arxiv.org/abs/2111.06377).

    pred, patches: [B, L, P]; mask [B, L], 1 = hidden. With `norm_pix`, each target patch is
    standardised by its own mean and variance (+1e-6). The per-patch mean squared error is averaged
    over hidden patches only; with nothing hidden (mask ratio 0) it falls back to every patch.
    """
    target = patches
    if norm_pix:
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
    per_patch = (pred - target).pow(2).mean(-1)
    hidden = mask.sum()  # chosen on the device: no value is read back to the host
    return torch.where(hidden > 0, (per_patch * mask).sum() / hidden.clamp(min=1), per_patch.mean())


def videomae_targets(tubelets: torch.Tensor, mask: torch.Tensor, norm_pix: bool = True,
                     eps: float = 1e-6, hidden: int | None = None) -> torch.Tensor:
    """VideoMAE's regression targets: tubelets [B, L, t*p*p, C] pixels in [0, 1]
    (`models.masking.tubelet_patchify`), mask bool [B, L] (True = hidden) -> [B, M, t*p*p*C] for the
    M hidden tokens of each sample in token order (all L when nothing is hidden). With `norm_pix`
    each tubelet is standardised per channel: (x - mean) / (unbiased std + eps), as in the paper's
    code with eps = 1e-6; a larger eps (in pixel units) keeps near-flat tubelets, whose variation is
    8-bit quantisation and compression noise, from being blown up into unit-variance noise.
    `hidden`, the hidden tokens per sample where the caller knows it, spares reading it from `mask`."""
    target = tubelets
    if norm_pix:
        target = (target - target.mean(-2, keepdim=True)) / (target.var(-2, unbiased=True, keepdim=True).sqrt() + eps)
    target = target.flatten(2)
    hidden = int(mask[0].sum()) if hidden is None else hidden
    if hidden:
        return torch.gather(target, 1, hidden_first(mask)[:, :hidden, None].expand(-1, -1, target.shape[-1]))
    return target


def hidden_first(mask: torch.Tensor) -> torch.Tensor:
    """bool [B, L] (True = hidden) -> token indices [B, L]: the hidden ones first, then the visible
    ones, each in token order. Gathering by it does what boolean indexing does when every row hides
    as many tokens, without reading the mask back to the host."""
    return mask.to(torch.uint8).argsort(dim=1, descending=True, stable=True)


def videomae_loss(pred: torch.Tensor, tubelets: torch.Tensor, mask: torch.Tensor,
                  norm_pix: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """VideoMAE's reconstruction loss (Tong et al. 2022, https://arxiv.org/abs/2203.12602): the mean
    squared error of pred [B, M, t*p*p*C] to `videomae_targets(tubelets, mask, norm_pix, eps)`, over
    the hidden tokens only."""
    return (pred - videomae_targets(tubelets, mask, norm_pix, eps)).pow(2).mean()


def cpc_loss(z: torch.Tensor, predictions: list[torch.Tensor],
             valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """CPC's InfoNCE over future steps (van den Oord et al. 2018, https://arxiv.org/abs/1807.03748).

    z [B, T, D] encoded steps; predictions[k-1] [B, T-k, D] = W_k c_t for t < T-k, the guesses of
    z_{t+k}. For each k, the guess for (b, t) scores every z_{b', t'+k} in the batch by a dot
    product; its own target z_{b, t+k} is the positive and the other B(T-k) - 1 (other time steps of
    its sequence and of the other sequences) are negatives. `valid` bool [B, T] (a prefix of each
    row: the steps that hold signal, not padding) keeps only valid targets, as positives and as
    negatives, and only the guesses of valid targets. Returns (the mean over k of the mean
    cross-entropy, the mean top-1 accuracy of picking the positive); offsets without a valid
    target are left out of the mean, and a batch without any gives 0.
    """
    losses, accs, present = [], [], []
    b, t, d = z.shape
    for k, pred in enumerate(predictions, start=1):
        targets, guesses = z[:, k:].reshape(-1, d), pred.reshape(-1, d)  # [N, D]
        logits = guesses @ targets.t()
        labels = torch.arange(targets.shape[0], device=z.device)
        if valid is None:
            losses.append(F.cross_entropy(logits, labels))
            accs.append((logits.argmax(1) == labels).float().mean())
            present.append(torch.ones((), device=z.device))
            continue
        # Padding is masked, not indexed away, so nothing is read back from the device: a padded
        # target scores the dtype's lowest value (out of every softmax), a padded guess weighs 0.
        keep = valid[:, k:].reshape(-1)
        logits = logits.masked_fill(~keep[None, :], torch.finfo(logits.dtype).min)
        count = keep.sum().clamp(min=1)
        per_guess = F.cross_entropy(logits, labels, reduction="none")
        losses.append(torch.where(keep, per_guess, torch.zeros_like(per_guess)).sum() / count)
        accs.append(((logits.argmax(1) == labels) & keep).sum() / count)
        present.append(keep.any().float())
    # The mean over the offsets k that have a valid target at all.
    weight = torch.stack(present)
    norm = weight.sum().clamp(min=1)
    return (torch.stack(losses) * weight).sum() / norm, (torch.stack(accs) * weight).sum() / norm


def pseudo_label_loss(target_logits: torch.Tensor, logits: torch.Tensor, threshold: float
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The unlabelled term of FixMatch (Sohn et al. 2020, https://arxiv.org/abs/2001.07685, eq. 4)
    and thresholded Pseudo-Label (Lee 2013).

    target_logits [U, C] (the weak view; no gradient flows into it) make hard pseudo-labels
    q = argmax softmax; logits [U, C] (the strong view for FixMatch, the same weak view for
    Pseudo-Label) are trained towards them where max softmax >= threshold:
    (1 / U) sum_u 1[max q_u >= threshold] H(argmax q_u, softmax(logits_u)).
    The mean runs over all U samples, confident or not, as in the paper.
    -> (loss, mask bool [U], pseudo-labels long [U]).
    """
    probs = target_logits.detach().softmax(-1)
    confidence, pseudo = probs.max(-1)
    mask = confidence >= threshold
    loss = (F.cross_entropy(logits, pseudo, reduction="none") * mask).mean()
    return loss, mask, pseudo
