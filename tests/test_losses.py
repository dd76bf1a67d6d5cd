"""Losses against direct, loop-based computations of their papers' formulas."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mmssl.losses import clip_loss, info_nce, siglip_loss


def unit(n, d, seed):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=1)


def test_info_nce_matches_the_formula():
    q, k = unit(5, 8, 0), unit(9, 8, 1)
    t, offset = 0.2, 3
    ref = 0.0
    for i in range(5):
        num = math.exp(float(q[i] @ k[offset + i]) / t)
        den = sum(math.exp(float(q[i] @ k[j]) / t) for j in range(9))
        ref += -math.log(num / den)
    assert torch.allclose(info_nce(q, k, t, offset), torch.tensor(ref / 5, dtype=torch.float64))


def test_clip_loss_matches_the_formula_and_is_symmetric():
    img, txt = unit(6, 4, 2), unit(6, 4, 3)
    scale = torch.tensor(1 / 0.07, dtype=torch.float64)
    ref = 0.0
    for i in range(6):
        li = [float(scale * img[i] @ txt[j]) for j in range(6)]
        lt = [float(scale * txt[i] @ img[j]) for j in range(6)]
        ref += -(li[i] - math.log(sum(math.exp(x) for x in li)))
        ref += -(lt[i] - math.log(sum(math.exp(x) for x in lt)))
    ref /= 2 * 6
    got = clip_loss(img, txt, img, txt, scale)
    assert torch.allclose(got, torch.tensor(ref, dtype=torch.float64))
    assert torch.allclose(got, clip_loss(txt, img, txt, img, scale))  # swapping modalities changes nothing


def test_clip_local_losses_average_to_the_full_batch_loss():
    img, txt = unit(8, 4, 4), unit(8, 4, 5)
    scale = torch.tensor(10.0, dtype=torch.float64)
    full = clip_loss(img, txt, img, txt, scale)
    halves = [clip_loss(img[r * 4:(r + 1) * 4], txt[r * 4:(r + 1) * 4], img, txt, scale, offset=r * 4) for r in range(2)]
    assert torch.allclose(full, sum(halves) / 2)


def test_siglip_loss_matches_the_formula():
    img, txt = unit(5, 4, 6), unit(5, 4, 7)
    t, b = torch.tensor(10.0, dtype=torch.float64), torch.tensor(-10.0, dtype=torch.float64)
    ref = 0.0
    for i in range(5):
        for j in range(5):
            z = 1.0 if i == j else -1.0
            ref += -math.log(1 / (1 + math.exp(-z * (float(t * img[i] @ txt[j]) + float(b)))))
    got = siglip_loss(img, txt, t, b)
    assert torch.allclose(got, torch.tensor(ref / 5, dtype=torch.float64))
    halves = [siglip_loss(img[r * 2:(r + 1) * 2 + (r == 1)], txt, t, b, offset=r * 2, global_batch=5) for r in range(2)]
    assert torch.allclose(sum(halves), got)


def test_nt_xent_matches_the_formula_over_2n_views():
    z1, z2 = unit(4, 6, 8), unit(4, 6, 9)
    t = 0.5
    views = torch.cat([z1, z2])
    ref = 0.0
    for a in range(8):
        pos = (a + 4) % 8
        num = math.exp(float(views[a] @ views[pos]) / t)
        den = sum(math.exp(float(views[a] @ views[k]) / t) for k in range(8) if k != a)
        ref += -math.log(num / den)
    from mmssl.losses import nt_xent

    got = nt_xent(z1, z2, z1, z2, t)
    assert torch.allclose(got, torch.tensor(ref / 8, dtype=torch.float64))
    assert torch.allclose(got, nt_xent(z2, z1, z2, z1, t))  # symmetric in the two views
    halves = [nt_xent(z1[r * 2:(r + 1) * 2], z2[r * 2:(r + 1) * 2], z1, z2, t, offset=r * 2) for r in range(2)]
    assert torch.allclose(sum(halves) / 2, got)


def test_neg_cosine_stops_the_gradient_of_the_target():
    from mmssl.losses import neg_cosine

    p = torch.randn(3, 5, requires_grad=True)
    z = torch.randn(3, 5, requires_grad=True)
    loss = neg_cosine(p, z)
    pd, zd = p.detach(), z.detach()
    ref = -sum(float(pd[i] @ zd[i] / (pd[i].norm() * zd[i].norm())) for i in range(3)) / 3
    assert abs(float(loss.detach()) - ref) < 1e-6
    loss.backward()
    assert z.grad is None and p.grad is not None


def test_barlow_twins_matches_the_formula():
    from mmssl.losses import barlow_twins

    g = torch.Generator().manual_seed(10)
    z1, z2 = torch.randn(16, 4, generator=g, dtype=torch.float64), torch.randn(16, 4, generator=g, dtype=torch.float64)
    n, d, lambd = 16, 4, 0.01
    norm = lambda z: [[(z[k, i] - z[:, i].mean()) / z[:, i].std(unbiased=False) for i in range(d)] for k in range(n)]  # noqa: E731
    a, b = norm(z1), norm(z2)
    ref = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(float(a[k][i] * b[k][j]) for k in range(n)) / n
            ref += (1 - c) ** 2 if i == j else lambd * c ** 2
    got = barlow_twins(z1, z2, lambd)
    assert abs(float(got) - ref) < 1e-9
    assert abs(float(barlow_twins(z2, z1, lambd)) - ref) < 1e-9  # symmetric
    assert float(barlow_twins(z1, z1, lambd)) < float(got)  # identical views: only redundancy is penalised


def test_vicreg_matches_the_formula():
    from mmssl.losses import vicreg

    g = torch.Generator().manual_seed(11)
    z1, z2 = torch.randn(8, 3, generator=g, dtype=torch.float64), torch.randn(8, 3, generator=g, dtype=torch.float64)
    n, d = 8, 3
    inv = sum(float((z1[k, i] - z2[k, i]) ** 2) for k in range(n) for i in range(d)) / (n * d)
    terms = []
    for z in (z1, z2):
        mean = [float(z[:, i].mean()) for i in range(d)]
        cov = [[sum((float(z[k, i]) - mean[i]) * (float(z[k, j]) - mean[j]) for k in range(n)) / (n - 1)
                for j in range(d)] for i in range(d)]
        var = sum(max(0.0, 1.0 - math.sqrt(cov[i][i] + 1e-4)) for i in range(d)) / d
        off = sum(cov[i][j] ** 2 for i in range(d) for j in range(d) if i != j) / d
        terms.append((var, off))
    ref = 25 * inv + 25 * (terms[0][0] + terms[1][0]) + (terms[0][1] + terms[1][1])
    assert abs(float(vicreg(z1, z2)) - ref) < 1e-9


def test_pseudo_label_loss_matches_a_loop_over_the_unlabelled_samples():
    """FixMatch eq. 4: (1/U) sum_u 1[max p(weak_u) >= tau] H(argmax p(weak_u), p(strong_u)), the
    mean over every sample; no gradient reaches the weak view."""
    from mmssl.losses import pseudo_label_loss

    torch.manual_seed(0)
    weak = (torch.randn(16, 5) * 4).requires_grad_()
    strong = torch.randn(16, 5, requires_grad=True)
    tau = 0.8
    loss, mask, pseudo = pseudo_label_loss(weak, strong, tau)
    expected, confident = 0.0, []
    for u in range(16):
        p = [math.exp(v) for v in weak[u].tolist()]
        p = [v / sum(p) for v in p]
        label = max(range(5), key=lambda c: p[c])
        confident.append(max(p) >= tau)
        if max(p) >= tau:
            logits = strong[u].tolist()
            expected += -(logits[label] - math.log(sum(math.exp(v) for v in logits)))
        assert pseudo[u] == label
    assert 0 < sum(confident) < 16  # both branches of the indicator are exercised
    assert mask.tolist() == confident
    assert math.isclose(loss.item(), expected / 16, rel_tol=1e-5)
    loss.backward()
    assert weak.grad is None and strong.grad.abs().sum() > 0
    assert torch.all(strong.grad[~mask] == 0)
