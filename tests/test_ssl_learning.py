"""Each image SSL objective learns on real images: its loss falls over a few dozen steps on CPU,
and its embeddings do not collapse (the standard deviation of normalised embeddings stays up).

DINO is the one exception to "the loss falls": its cross-entropy is H(teacher) + KL(teacher ||
student), and centering raises the teacher's entropy on purpose in the first steps, so the total
rises while the student learns. As in the paper's Fig. 7 we test the KL term (it must fall) and
the teacher entropy (it must stay away from 0 and from log K, the two collapses)."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from mmssl.collapse import COLLAPSE_THRESHOLD
from mmssl.config import plain
from mmssl.data import LabelField, build_loader
from mmssl.models.encoders import build_encoder
from mmssl.models.vit import ViT
from mmssl.objectives.barlow_twins import BarlowTwins
from mmssl.objectives.byol import BYOL
from mmssl.objectives.deep_infomax import DeepInfoMax
from mmssl.objectives.dino import DINO
from mmssl.objectives.jigsaw import Jigsaw
from mmssl.objectives.mae import MAE
from mmssl.objectives.moco import MoCo
from mmssl.objectives.moco_v3 import MoCoV3
from mmssl.objectives.nnclr import NNCLR
from mmssl.objectives.relative_position import RelativePosition
from mmssl.objectives.rotation import Rotation
from mmssl.objectives.simclr import SimCLR
from mmssl.objectives.simsiam import SimSiam
from mmssl.objectives.supcon import SupCon
from mmssl.objectives.swav import SwAV
from mmssl.recipe_image import IMAGE_SSL_DEFAULTS, SMALL_RESNET, multi_crop, one_image, two_views

SIZE, BATCH, STEPS = 32, 32, 30
# The recipe's augment keys, at their defaults but for these.
AUG = {"image_size": SIZE, "augment": {**plain(IMAGE_SSL_DEFAULTS)["augment"], "scale_min": 0.3, "color": 1.0, "blur": 0.0,
                                       "solarize": 0.0, "local_size": 16, "n_local": 2, "local_scale_max": 0.4}}
BACKBONE = {**SMALL_RESNET, "config": {**SMALL_RESNET["config"], "hidden_sizes": [32, 64, 128, 256]}}


def backbone():
    return build_encoder(BACKBONE)


# name -> (objective factory, field builder, learning rate)
CASES = {
    "simclr": (lambda: SimCLR(backbone(), 64, 256, temperature=0.2), two_views, 1e-3),
    "moco_v2": (lambda: MoCo(backbone(), 64, 256, temperature=0.2, queue_size=64, momentum=0.9, bn_groups=2), two_views, 1e-3),
    "moco_v2_symmetric": (lambda: MoCo(backbone(), 64, 256, temperature=0.2, queue_size=64, momentum=0.9, bn_groups=2,
                                       symmetric=True), two_views, 1e-3),
    "moco_v3": (lambda: MoCoV3(backbone(), 64, 256, temperature=0.2, momentum=0.9), two_views, 1e-3),
    "byol": (lambda: BYOL(backbone(), 64, 256, momentum=0.9), two_views, 1e-3),
    "simsiam": (lambda: SimSiam(backbone(), 256, 64), two_views, 1e-3),
    "dino": (lambda: DINO(backbone(), out_dim=256, hidden_dim=256, bottleneck_dim=64, momentum=0.9,
                          teacher_temp_warmup=0.0), multi_crop, 5e-4),
    "barlow_twins": (lambda: BarlowTwins(backbone(), 256, 256), two_views, 1e-3),
    "vicreg": (lambda: VICRegSmall(), two_views, 1e-3),
    "swav": (lambda: SwAV(backbone(), 64, 256, n_prototypes=30), multi_crop, 1e-3),
    "nnclr": (lambda: NNCLR(backbone(), 64, 256, 256, queue_size=128), two_views, 1e-3),
    "mae": (lambda: MAE(ViT(SIZE, 4, dim=64, depth=2, heads=2), decoder_dim=32, decoder_depth=1, decoder_heads=2), one_image, 1e-3),
    "rotation": (lambda: Rotation(backbone(), 128), one_image, 1e-3),
    "jigsaw": (lambda: Jigsaw(backbone(), grid=2, n_perms=24, tile_size=16, hidden_dim=128), one_image, 1e-3),
    "supcon": (lambda: SupCon(backbone(), 64, 256), "labels", 1e-3),
    "deep_infomax": (lambda: DeepInfoMax(backbone(), local_stage=1, embed_dim=64, hidden_dim=128), one_image, 1e-3),
    "relative_position": (lambda: RelativePosition(backbone(), crop=0.75, patch_size=16, hidden_dim=128, colour_guard="none"),
                          one_image, 1e-3),
}


def VICRegSmall():
    from mmssl.objectives.vicreg import VICReg

    return VICReg(backbone(), 256, 256)


def real_batches(shards, fields_for, n=4):
    fields = two_views(AUG) + [LabelField()] if fields_for == "labels" else fields_for(AUG)
    loader = build_loader(str(shards), fields, BATCH, num_workers=0, seed=0)
    return list(itertools.islice(loader, n))


@pytest.mark.parametrize("name", list(CASES))
def test_objective_learns_on_real_images_without_collapse(name, fashion_shards):
    make, fields, lr = CASES[name]
    torch.manual_seed(0)
    batches = real_batches(fashion_shards, fields)
    model = make()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=1e-4)
    losses, stds = [], []
    watched = "kl" if name == "dino" else "loss"
    entropy = None
    for step, batch in zip(range(STEPS), itertools.cycle(batches)):
        out = model(batch, progress=step / STEPS)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        if hasattr(model, "after_step"):
            model.after_step((step + 1) / STEPS)
        losses.append(float(out[watched].detach()))
        stds.append(float(out["embed_std"]))
        entropy = float(out.get("teacher_entropy", 0.0))
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    print(f"{name}: {watched} {first:.4f} -> {last:.4f}, embedding std {stds[-1]:.3f}")
    assert all(map(math.isfinite, losses))
    assert last < first - 0.02 * abs(first), f"{name}: {watched} did not fall ({first:.4f} -> {last:.4f})"
    if name == "dino":
        log_k = math.log(model.center.numel())
        assert 0.05 * log_k < entropy < 0.95 * log_k, f"dino: teacher entropy {entropy:.3f} of log K {log_k:.3f}"
    assert stds[-1] > COLLAPSE_THRESHOLD, f"{name}: embeddings collapsed (std {stds[-1]:.3f})"
