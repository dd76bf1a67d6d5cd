"""The moving parts of the image SSL objectives: EMA, momentum schedule, queue, MoCo's Shuffling BN
and symmetric loss, per-view BatchNorm (Barlow Twins, BYOL), DINO centre and temperature, Sinkhorn
under the objective, rotations, jigsaw permutations and tiles."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from mmssl.collapse import effective_rank
from mmssl.losses import barlow_twins, byol_loss
from mmssl.models.ema import ema_update, make_target
from mmssl.models.queue import FeatureQueue
from mmssl.objectives.barlow_twins import BarlowTwins
from mmssl.objectives.byol import BYOL
from mmssl.objectives.dino import DINO
from mmssl.objectives.jigsaw import cut_tiles, hamming_distances, permutation_set, standardise_tiles
from mmssl.objectives.moco import MoCo, forward_in_groups
from mmssl.objectives.rotation import rotations
from mmssl.optim import cosine_schedule


def test_ema_update_moves_each_parameter_by_the_formula_and_copies_buffers():
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    target = make_target(online)
    assert all(not p.requires_grad for p in target.parameters())
    before = [p.clone() for p in target.parameters()]
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
    online(torch.randn(8, 3))  # changes BatchNorm running statistics
    ema_update(target, online, 0.9)
    for b, t, o in zip(before, target.parameters(), online.parameters()):
        assert torch.allclose(t, 0.9 * b + 0.1 * o)
    assert torch.equal(target[1].running_mean, online[1].running_mean)


def test_momentum_schedule_is_byols_cosine():
    base = 0.996
    for k, total in [(0, 100), (30, 100), (100, 100)]:
        expected = 1 - (1 - base) * (math.cos(math.pi * k / total) + 1) / 2
        assert math.isclose(cosine_schedule(k / total, base, 1.0), expected)


def test_queue_is_first_in_first_out_and_wraps():
    q = FeatureQueue(5, 2, normalize=False)
    assert q.valid().shape == (0, 2)
    q.push(torch.tensor([[1.0, 1], [2, 2], [3, 3]]))
    assert q.valid()[:, 0].tolist() == [1, 2, 3] and int(q.filled) == 3
    q.push(torch.tensor([[4.0, 4], [5, 5], [6, 6]]))  # 6 overwrites the oldest (1)
    assert q.items[:, 0].tolist() == [6, 2, 3, 4, 5] and int(q.ptr) == 1 and int(q.filled) == 5
    q.push(torch.arange(14.0).view(7, 2))  # more rows than the queue: the newest 5 remain
    assert sorted(q.items[:, 0].tolist()) == [4, 6, 8, 10, 12]
    assert "items" in q.state_dict() and "ptr" in q.state_dict()  # checkpointed, so resume is exact


class Flat(nn.Module):
    out_dim = 12

    def forward(self, x):
        return x.flatten(1)


def test_shuffling_bn_normalises_each_key_with_another_sub_batch_and_restores_order():
    torch.manual_seed(0)
    net = nn.BatchNorm1d(3)  # train mode: batch statistics, so the output depends on the sub-batch
    x, perm = torch.randn(8, 3), torch.tensor([5, 2, 7, 0, 3, 6, 1, 4])
    queries = forward_in_groups(net, x, 2)
    assert torch.allclose(queries[:4], net(x[:4])) and torch.allclose(queries[4:], net(x[4:]))
    keys = forward_in_groups(net, x, 2, perm)
    for i in range(8):  # row i of the keys is image i, normalised with the statistics of its shuffled half
        half = [j for j in range(8) if (perm == j).nonzero().item() // 4 == (perm == i).nonzero().item() // 4]
        ref = (x[i] - x[half].mean(0)) / torch.sqrt(x[half].var(0, unbiased=False) + net.eps)
        assert torch.allclose(keys[i], ref, atol=1e-5)
    assert not torch.allclose(keys, queries)  # the halves differ, so do the statistics
    plain = nn.Linear(3, 2)  # without BatchNorm the grouping changes nothing
    assert torch.allclose(forward_in_groups(plain, x, 4, perm), plain(x), atol=1e-6)


def test_moco_v2_encodes_only_query_view_1_and_key_view_2():
    seen = []

    class Spy(nn.Module):
        out_dim = 4

        def forward(self, x):
            seen.append(x.shape[0])
            return x.flatten(1)[:, :4]

    moco = MoCo(Spy(), proj_dim=4, hidden_dim=8, queue_size=16, bn_groups=2)
    out = moco({"views": [torch.randn(32, 1, 2, 2), torch.randn(32, 1, 2, 2)]})
    assert torch.isfinite(out["loss"])
    assert seen == [16, 16, 16, 16]  # two query sub-batches, two key sub-batches: 64 images, not 128
    seen.clear()
    moco({"views": [torch.randn(20, 1, 2, 2), torch.randn(20, 1, 2, 2)]})
    assert seen == [20, 20]  # sub-batches would hold fewer than 16 images: one each


def test_symmetric_moco_v2_averages_both_directions_against_the_old_queue_and_queues_both_keys():
    torch.manual_seed(0)
    moco = MoCo(Flat(), proj_dim=4, hidden_dim=8, queue_size=64, bn_groups=1, symmetric=True)
    v1, v2 = torch.randn(8, 12), torch.randn(8, 12)
    queue_before = moco.queue.items.clone()
    out = moco({"views": [v1, v2]})
    # The target starts as a copy of the online network and the v2 head has no BatchNorm, so the
    # keys are the online embeddings of the key views.
    z1, z2 = (nn.functional.normalize(moco.online(v), dim=-1) for v in (v1, v2))
    t = moco.temperature

    def direction(q, k):  # -log of the positive's softmax share against the queued negatives, per query
        return sum(-math.log(math.exp(q[i] @ k[i] / t)
                             / (math.exp(q[i] @ k[i] / t) + sum(math.exp(q[i] @ n / t) for n in queue_before)))
                   for i in range(q.shape[0])) / q.shape[0]

    with torch.no_grad():
        expected = (direction(z1, z2) + direction(z2, z1)) / 2
    assert abs(out["loss"].item() - expected) < 1e-4
    # Queued in the order the directions ran: view 2's keys (for queries of view 1), then view 1's.
    assert torch.allclose(moco.queue.items[:16], torch.cat([z2, z1]).detach(), atol=1e-6)
    assert int(moco.queue.filled) == 16


def test_barlow_twins_per_view_bn_normalises_each_view_with_its_own_statistics():
    torch.manual_seed(0)
    v1, v2 = torch.randn(16, 12), torch.randn(16, 12) * 3 + 1  # views with different statistics
    per_view = BarlowTwins(Flat(), proj_dim=6, hidden_dim=8, per_view_bn=True)
    joint = BarlowTwins(Flat(), proj_dim=6, hidden_dim=8, per_view_bn=False)
    joint.load_state_dict(per_view.state_dict())
    alone = [per_view.projector(v) for v in (v1, v2)]  # each view through the projector's BatchNorm by itself
    together = joint.projector(torch.cat([v1, v2])).chunk(2)
    assert torch.allclose(per_view({"views": [v1, v2]})["loss"], barlow_twins(*alone, per_view.lambd))
    assert torch.allclose(joint({"views": [v1, v2]})["loss"], barlow_twins(*together, joint.lambd))
    assert not torch.allclose(alone[1], together[1], atol=1e-3)


def test_byol_per_view_bn_encodes_each_view_alone_in_both_networks():
    torch.manual_seed(0)
    v1, v2 = torch.randn(16, 12), torch.randn(16, 12) * 3 + 1
    byol = BYOL(Flat(), proj_dim=6, hidden_dim=8, per_view_bn=True)
    p1, p2 = (byol.predictor(byol.online(v)) for v in (v1, v2))
    with torch.no_grad():
        t1, t2 = (byol.target(v) for v in (v1, v2))
    assert torch.allclose(byol({"views": [v1, v2]})["loss"], byol_loss(p1, t2) + byol_loss(p2, t1))
    byol.per_view_bn = False
    assert not torch.allclose(byol({"views": [v1, v2]})["loss"], byol_loss(p1, t2) + byol_loss(p2, t1), atol=1e-3)


def test_dino_centre_is_an_ema_of_the_teacher_batch_mean():
    dino = DINO(Flat(), out_dim=6, hidden_dim=8, bottleneck_dim=4, center_momentum=0.9)
    logits = torch.randn(10, 6)
    dino.update_center(logits)
    assert torch.allclose(dino.center, 0.1 * logits.mean(0))
    dino.update_center(logits * 2)
    assert torch.allclose(dino.center, 0.9 * 0.1 * logits.mean(0) + 0.1 * 2 * logits.mean(0))


def test_dino_teacher_temperature_warms_up_linearly_then_stays():
    dino = DINO(Flat(), out_dim=6, hidden_dim=8, bottleneck_dim=4, teacher_temp=0.07, warmup_teacher_temp=0.04,
                teacher_temp_warmup=0.2)
    assert math.isclose(dino.teacher_temperature(0.0), 0.04)
    assert math.isclose(dino.teacher_temperature(0.1), 0.055)
    assert dino.teacher_temperature(0.5) == 0.07


def test_dino_forward_updates_the_centre_and_learns_only_the_student():
    torch.manual_seed(0)
    dino = DINO(Flat(), out_dim=6, hidden_dim=8, bottleneck_dim=4)
    views = [torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2), torch.randn(4, 3, 1, 1)[:, :, :1, :1].expand(-1, -1, 2, 2)]
    out = dino({"views": views})
    out["loss"].backward()
    assert dino.center.abs().sum() > 0
    assert all(p.grad is None for p in dino.teacher.parameters())
    assert any(p.grad is not None for p in dino.student.parameters())


def test_rotations_are_labelled_by_quarter_turns():
    x = torch.randn(3, 1, 4, 4)
    rotated, labels = rotations(x)
    assert labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    for k in range(4):
        back = torch.rot90(rotated[3 * k: 3 * k + 3], -k, dims=(2, 3))
        assert torch.equal(back, x)


def test_jigsaw_permutation_sets_are_distinct_and_as_far_apart_as_asked():
    def pair_distances(perms):
        return [sum(a != b for a, b in zip(p, q)) for p, q in itertools.combinations(perms.tolist(), 2)]

    sets = {how: permutation_set(9, 30, how, seed=0) for how in ("max", "random", "min")}
    for perms in sets.values():
        assert perms.shape == (30, 9)
        assert len({tuple(p) for p in perms.tolist()}) == 30
        assert all(sorted(p) == list(range(9)) for p in perms.tolist())
    far, rand, near = (pair_distances(sets[h]) for h in ("max", "random", "min"))
    assert min(far) >= 7  # the greedy max-Hamming set; random picks give pairs at distance 2-4
    # the minimal set: each added where its summed distance is least, so they cluster round the first
    assert min(near) == 2 and sum(near) / len(near) < 5 < sum(rand) / len(rand) < sum(far) / len(far)
    for how, d in zip(("max", "random", "min"), (far, rand, near)):
        assert hamming_distances(sets[how]) == pytest.approx((sum(d) / len(d), min(d)))
    # every pick is the greedy choice, its distances counted directly over all 9! orders
    every = torch.tensor(list(itertools.permutations(range(9))))
    nearest = torch.full((len(every),), 9)
    summed, taken = torch.zeros(len(every), dtype=torch.long), torch.zeros(len(every), dtype=torch.bool)
    for k in range(1, 30):
        nearest = torch.minimum(nearest, (every != sets["max"][k - 1]).sum(1))
        assert (sets["max"][k] != sets["max"][:k]).sum(1).min() == nearest.max()
        summed += (every != sets["min"][k - 1]).sum(1)
        taken |= (every == sets["min"][k - 1]).all(1)
        assert (sets["min"][k] != sets["min"][:k]).sum() == summed[~taken].min()
    assert permutation_set(4, 100).shape == (24, 4)  # fewer exist: all of them
    with pytest.raises(ValueError, match="max, random or min"):
        permutation_set(9, 30, "far")


def test_cut_tiles_takes_a_crop_from_each_cell_in_row_major_order():
    img = torch.zeros(1, 1, 8, 8)
    for r, c in itertools.product(range(2), range(2)):
        img[:, :, 4 * r: 4 * r + 4, 4 * c: 4 * c + 4] = 2 * r + c
    tiles = cut_tiles(img, grid=2, crop=0.75, tile_size=3)
    assert tiles.shape == (1, 4, 1, 3, 3)
    assert [float(t.mean()) for t in tiles[0]] == [0.0, 1.0, 2.0, 3.0]


def test_each_tile_is_standardised_on_its_own_and_flat_tiles_stay_flat():
    torch.manual_seed(0)
    tiles = torch.randn(2, 4, 3, 5, 5) * torch.tensor([0.5, 2.0, 7.0, 1.0]).view(1, 4, 1, 1, 1) + 3.0
    tiles[1, 2] = -1.5  # a blank corner: one value everywhere
    out = standardise_tiles(tiles)
    for b, t in itertools.product(range(2), range(4)):
        x = tiles[b, t].flatten()
        if (b, t) == (1, 2):
            assert torch.equal(out[b, t], torch.zeros_like(out[b, t]))
            continue
        expected = (x - sum(x.tolist()) / len(x)) / float(x.std())  # the paper's per-patch normalisation
        assert torch.allclose(out[b, t].flatten(), expected, atol=1e-5)


def test_effective_rank_is_rankme_and_sees_dimensional_collapse():
    torch.manual_seed(0)
    features = torch.randn(50, 8) @ torch.diag(torch.tensor([5.0, 3, 2, 1, 1, 0.5, 0.1, 0.01]))
    # Garrido et al. 2023, eq. 1, one singular value at a time.
    sigma = [float(s) for s in torch.linalg.svdvals(features.double())]
    p = [s / sum(sigma) + 1e-7 for s in sigma]
    reference = math.exp(-sum(pk * math.log(pk) for pk in p))
    assert math.isclose(effective_rank(features), reference, rel_tol=1e-9)
    assert math.isclose(effective_rank(torch.eye(6) * 3.0), 6.0, rel_tol=1e-5)  # six equal directions
    one_direction = torch.randn(40, 1) * torch.randn(1, 16)  # every row on one line: full collapse
    assert effective_rank(one_direction) < 1.01
    spread, squeezed = torch.randn(200, 16), torch.randn(200, 16) * torch.tensor([10.0, 10.0] + [0.1] * 14)
    assert effective_rank(spread) > 12 > 4 > effective_rank(squeezed)
