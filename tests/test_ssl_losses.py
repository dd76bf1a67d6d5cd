"""The image SSL losses and their parts against loop-based computations of the papers' formulas."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mmssl.losses import byol_loss, dino_loss, masked_patch_mse, moco_loss, nt_xent, sinkhorn, supcon_loss, swav_loss
from mmssl.models.masking import patchify, random_masking, unpatchify


def unit(n, d, seed):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=1)


def close(got, ref):
    return torch.allclose(got, torch.tensor(ref, dtype=got.dtype), rtol=1e-9, atol=1e-9)


def test_moco_loss_matches_the_formula():
    q, k, queue = unit(4, 6, 0), unit(4, 6, 1), unit(7, 6, 2)
    t, ref = 0.2, 0.0
    for i in range(4):
        pos = math.exp(float(q[i] @ k[i]) / t)
        neg = sum(math.exp(float(q[i] @ queue[j]) / t) for j in range(7))
        ref += -math.log(pos / (pos + neg)) / 4
    assert close(moco_loss(q, k, queue, t), ref)


def test_byol_loss_is_the_normalised_squared_distance_and_symmetric():
    p, z = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    ref = sum(float(((p[i] / p[i].norm() - z[i] / z[i].norm()) ** 2).sum()) for i in range(5)) / 5
    assert close(byol_loss(p, z), ref)
    assert close(byol_loss(z, p), ref)


def test_dino_loss_matches_the_formula():
    g = torch.Generator().manual_seed(0)
    student = [torch.randn(3, 5, generator=g, dtype=torch.float64) for _ in range(4)]  # 2 global + 2 local
    teacher = [torch.randn(3, 5, generator=g, dtype=torch.float64) for _ in range(2)]
    center = torch.randn(5, generator=g, dtype=torch.float64)
    ts, tt = 0.1, 0.04
    ref, pairs = 0.0, 0
    for a in range(2):
        for b in range(4):
            if a == b:
                continue
            for i in range(3):
                pt = [math.exp((float(teacher[a][i, k]) - float(center[k])) / tt) for k in range(5)]
                ps = [math.exp(float(student[b][i, k]) / ts) for k in range(5)]
                ref -= sum(pt[k] / sum(pt) * math.log(ps[k] / sum(ps)) for k in range(5)) / 3
            pairs += 1
    assert close(dino_loss(student, teacher, center, ts, tt), ref / pairs)


def test_sinkhorn_matches_alternating_normalisation_and_equipartitions():
    scores = torch.randn(8, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    eps, iters = 0.5, 3
    # Reference: Q = exp(S^T / eps), then rows (prototypes) to 1/K and columns (samples) to 1/B in turn.
    q = [[math.exp(float(scores[b, k]) / eps) for b in range(8)] for k in range(4)]
    total = sum(map(sum, q))
    q = [[x / total for x in row] for row in q]
    for _ in range(iters):
        q = [[x / sum(row) / 4 for x in row] for row in q]
        cols = [sum(q[k][b] for k in range(4)) for b in range(8)]
        q = [[q[k][b] / cols[b] / 8 for b in range(8)] for k in range(4)]
    ref = torch.tensor([[q[k][b] * 8 for k in range(4)] for b in range(8)], dtype=torch.float64)
    codes = sinkhorn(scores, eps, iters)
    assert torch.allclose(codes, ref)
    assert torch.allclose(codes.sum(1), torch.ones(8, dtype=torch.float64))  # each sample: a distribution
    plain = torch.softmax(scores / eps, 1).sum(0)  # what each prototype would get without balancing
    assert (codes.sum(0) - 2.0).abs().max() < (plain - 2.0).abs().max()  # closer to B/K after 3 iterations
    big = sinkhorn(scores, eps, 50)
    assert torch.allclose(big.sum(0), torch.full((4,), 2.0, dtype=torch.float64), atol=1e-6)


def test_swav_loss_matches_the_swapped_prediction_formula():
    g = torch.Generator().manual_seed(1)
    scores = [torch.randn(3, 4, generator=g, dtype=torch.float64) for _ in range(3)]
    codes = [torch.softmax(torch.randn(3, 4, generator=g, dtype=torch.float64), 1) for _ in range(2)]
    t, ref, pairs = 0.1, 0.0, 0
    for i in range(2):
        for j in range(3):
            if i == j:
                continue
            for b in range(3):
                e = [math.exp(float(scores[j][b, k]) / t) for k in range(4)]
                ref -= sum(float(codes[i][b, k]) * math.log(e[k] / sum(e)) for k in range(4)) / 3
            pairs += 1
    assert close(swav_loss(scores, codes, t), ref / pairs)


def test_supcon_matches_the_formula():
    z, labels, t = unit(6, 5, 3), torch.tensor([0, 1, 0, 2, 1, 0]), 0.1
    ref, anchors = 0.0, 0
    for i in range(6):
        pos = [p for p in range(6) if p != i and labels[p] == labels[i]]
        if not pos:
            continue
        den = sum(math.exp(float(z[i] @ z[a]) / t) for a in range(6) if a != i)
        ref += -sum(math.log(math.exp(float(z[i] @ z[p]) / t) / den) for p in pos) / len(pos)
        anchors += 1
    assert close(supcon_loss(z, labels, z, labels, t), ref / anchors)


def test_supcon_with_one_image_per_class_is_nt_xent():
    """With distinct labels, each view's only positive is its other view: SupCon reduces to SimCLR."""
    z1, z2 = unit(5, 4, 4), unit(5, 4, 5)
    labels = torch.arange(5)
    z = torch.cat([z1, z2])
    got = supcon_loss(z, labels.repeat(2), z, labels.repeat(2), 0.3)
    assert torch.allclose(got, nt_xent(z1, z2, z1, z2, 0.3))


def test_supcon_rows_of_a_rank_match_the_full_batch():
    z, labels = unit(8, 4, 6), torch.tensor([0, 1, 1, 0, 2, 2, 0, 1])
    full = supcon_loss(z, labels, z, labels, 0.2)
    halves = [supcon_loss(z[i:i + 4], labels[i:i + 4], z, labels, 0.2, offset=i) for i in (0, 4)]
    assert torch.allclose(full, sum(halves) / 2)


def test_masked_patch_mse_matches_the_formula():
    g = torch.Generator().manual_seed(2)
    pred, patches = torch.randn(2, 4, 6, generator=g, dtype=torch.float64), torch.randn(2, 4, 6, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1.0, 0, 1, 0], [0, 0, 1, 1]], dtype=torch.float64)
    ref, n = 0.0, 0
    for b in range(2):
        for i in range(4):
            if mask[b, i]:
                x = patches[b, i]
                mu, var = float(x.mean()), float(x.var())
                ref += sum((float(pred[b, i, k]) - (float(x[k]) - mu) / math.sqrt(var + 1e-6)) ** 2 for k in range(6)) / 6
                n += 1
    assert close(masked_patch_mse(pred, patches, mask), ref / n)
    # Only hidden patches count: changing a visible prediction changes nothing.
    pred2 = pred.clone()
    pred2[0, 1] += 5.0
    assert torch.allclose(masked_patch_mse(pred2, patches, mask), masked_patch_mse(pred, patches, mask))


def test_patchify_round_trip_and_layout():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    p = patchify(x, 4)
    assert p.shape == (2, 4, 48)
    assert torch.equal(p[1, 1].view(4, 4, 3).permute(2, 0, 1), x[1, :, 0:4, 4:8])  # patch (0, 1), row-major
    assert torch.equal(unpatchify(p, 4, 3, 8, 8), x)


def test_random_masking_keeps_the_right_share_and_restores_order():
    torch.manual_seed(0)
    tokens = torch.arange(2 * 16, dtype=torch.float32).view(2, 16, 1).expand(-1, -1, 3).contiguous()
    visible, mask, ids_restore = random_masking(tokens, 0.75)
    assert visible.shape == (2, 4, 3) and mask.shape == (2, 16)
    assert mask.sum(1).tolist() == [12.0, 12.0]
    for b in range(2):
        kept = {int(v) - 16 * b for v in visible[b, :, 0]}  # token value = 16 b + position
        assert kept == set(torch.nonzero(mask[b] == 0).flatten().tolist())
    # Put (visible, then placeholders) back into the original order: visible tokens land where mask == 0.
    filler = torch.full((2, 12, 3), -1.0)
    seq = torch.gather(torch.cat([visible, filler], 1), 1, ids_restore.unsqueeze(-1).expand(-1, -1, 3))
    assert torch.equal(seq[mask == 0], tokens[mask == 0])
    assert (seq[mask == 1] == -1).all()
