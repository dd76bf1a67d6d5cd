"""Optimiser construction: decay groups, per-submodule learning-rate multipliers and their use in fit."""
from __future__ import annotations

import pytest
import torch
from torch.optim.lr_scheduler import LambdaLR

from mmssl.data import build_loader
from mmssl.models.encoders import build_encoder
from mmssl.objectives.simsiam import SimSiam
from mmssl.optim import build_optimizer, group_schedules, warmup_cosine
from mmssl.config import plain
from mmssl.recipe_image import IMAGE_SSL_DEFAULTS, SMALL_RESNET, two_views
from mmssl.train import fit, start


def small_simsiam(mult: float, fixed: bool = False) -> SimSiam:
    torch.manual_seed(0)
    return SimSiam(build_encoder(SMALL_RESNET), proj_dim=32, pred_dim=8, predictor_lr_mult=mult, predictor_fixed_lr=fixed)


@pytest.mark.parametrize("name", ["adamw", "lars", "sgd"])
def test_multiplier_scales_the_predictor_learning_rate_through_the_schedule(name):
    model = small_simsiam(10.0)
    opt = build_optimizer(model, name, 0.2, 1e-4, lr_multipliers=model.lr_multipliers)
    owner = {id(p): n for n, p in model.named_parameters()}
    seen = set()
    for g in opt.param_groups:
        for p in g["params"]:
            n = owner[id(p)]
            seen.add(n)
            assert g["lr"] == pytest.approx(0.2 * (10.0 if n.startswith("predictor.") else 1.0)), n
            assert g["weight_decay"] == (0.0 if p.ndim == 1 else 1e-4), n
    assert seen == set(owner.values())
    sched = LambdaLR(opt, lambda s: warmup_cosine(s, 10, 2))
    for _ in range(5):
        opt.step()
        sched.step()
    lrs = {owner[id(g["params"][0])].startswith("predictor."): g["lr"] for g in opt.param_groups}
    assert lrs[True] == pytest.approx(10 * lrs[False]) and lrs[False] < 0.2


@pytest.mark.parametrize("name", ["adamw", "lars", "sgd"])
def test_fixed_lr_groups_keep_their_rate_while_the_others_warm_up_and_decay(name):
    model = small_simsiam(10.0, fixed=True)
    assert model.fixed_lr == ("predictor",)
    opt = build_optimizer(model, name, 0.2, 1e-4, lr_multipliers=model.lr_multipliers, fixed_lr=model.fixed_lr)
    owner = {id(p): n for n, p in model.named_parameters()}
    assert all(g["fixed_lr"] == owner[id(g["params"][0])].startswith("predictor.") for g in opt.param_groups)
    sched = LambdaLR(opt, group_schedules(opt, lambda s: warmup_cosine(s, 10, 2)))
    trace = []
    for _ in range(10):
        trace.append({owner[id(g["params"][0])].startswith("predictor."): g["lr"] for g in opt.param_groups})
        opt.step()
        sched.step()
    assert all(lrs[True] == pytest.approx(2.0) for lrs in trace)  # 10 x 0.2 at every step
    encoder = [lrs[False] for lrs in trace]
    assert encoder[0] == pytest.approx(0.1) and encoder[2] == pytest.approx(0.2) and encoder[-1] < 0.02
    with pytest.raises(ValueError, match="'predictr', which is no submodule"):
        build_optimizer(model, name, 0.1, 0.0, fixed_lr=("predictr",))


def test_sgd_uses_momentum_and_unknown_names_are_refused():
    opt = build_optimizer(torch.nn.Linear(3, 2), "sgd", 0.1, 1e-4)
    assert all(g["momentum"] == 0.9 for g in opt.param_groups)
    # PyTorch has fused AdamW and SGD kernels for the CPU too: one launch per step, found_inf inside.
    assert opt.defaults["fused"] and build_optimizer(torch.nn.Linear(3, 2), "adamw", 0.1, 1e-4).defaults["fused"]
    with pytest.raises(ValueError, match="'adamw', 'lars' or 'sgd', got 'adam'"):
        build_optimizer(torch.nn.Linear(3, 2), "adam", 0.1, 0.0)
    with pytest.raises(ValueError, match="'predictr', which is no submodule"):
        build_optimizer(small_simsiam(1.0), "sgd", 0.1, 0.0, lr_multipliers={"predictr": 10.0})


def test_fit_applies_the_objective_lr_multipliers(fashion_shards, tmp_path):
    """A zero multiplier freezes the predictor inside the real training loop; the rest still moves."""
    cfg = {**plain(IMAGE_SSL_DEFAULTS), "output_dir": str(tmp_path / "run"), "max_steps": 2, "batch_size": 16,
           "num_workers": 0, "warmup_steps": 0, "tensorboard": False, "save_every": 0}
    loader = build_loader(str(fashion_shards), two_views(cfg), 16, num_workers=0, seed=0, shuffle_buffer=10)
    model = small_simsiam(0.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    fit(start(cfg), cfg, model, loader)
    moved = {n: not torch.equal(before[n], p.detach()) for n, p in model.named_parameters()}
    assert not any(v for n, v in moved.items() if n.startswith("predictor."))
    assert all(v for n, v in moved.items() if n.startswith("projector.") and n.endswith("weight"))


@pytest.mark.parametrize("name", ["adamw", "lars", "sgd"])
def test_found_inf_skips_the_update_on_the_device_and_the_next_step_is_as_if_it_never_came(name):
    """fit's guard against a non-finite loss or gradient: `found_inf` set, the NaN step changes
    nothing (parameters, moments, step counts), and the run continues exactly as one that never saw it."""
    def make():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
        return model, build_optimizer(model, name, 0.1, 1e-2)

    def step(model, opt, x, skip):
        model.zero_grad()
        model(x).pow(2).sum().backward()
        opt.found_inf = torch.tensor(1.0 if skip else 0.0)
        opt.step()

    x = torch.randn(5, 4)
    guarded, opt = make()
    plain_model, plain_opt = make()
    assert getattr(opt, "_step_supports_amp_scaling", False), "no device-side skip for " + name
    step(guarded, opt, x, False)
    step(plain_model, plain_opt, x, False)
    before = {k: v.clone() for k, v in guarded.state_dict().items()}
    state_before = [{k: v.clone() for k, v in s.items()} for s in opt.state.values()]
    step(guarded, opt, torch.full_like(x, float("nan")), True)
    for k, v in guarded.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    for s, ref in zip(opt.state.values(), state_before):
        for k in ref:
            torch.testing.assert_close(s[k], ref[k], rtol=0, atol=0)
    step(guarded, opt, x * 2, False)
    step(plain_model, plain_opt, x * 2, False)
    for k, v in guarded.state_dict().items():
        torch.testing.assert_close(v, plain_model.state_dict()[k], rtol=0, atol=0)


@pytest.mark.parametrize("name", ["adamw", "lars", "sgd"])
def test_a_skipped_first_step_leaves_no_trace(name):
    """Fused SGD allocates its momentum buffers on the first step; a skipped one must not leave them unset."""
    torch.manual_seed(0)
    a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    opt_a, opt_b = build_optimizer(a, name, 0.1, 1e-2), build_optimizer(b, name, 0.1, 1e-2)
    x = torch.randn(5, 4)
    a(torch.full_like(x, float("nan"))).sum().backward()
    opt_a.found_inf = torch.tensor(1.0)
    opt_a.step()
    for model, opt in ((a, opt_a), (b, opt_b)):
        model.zero_grad()
        model(x).pow(2).sum().backward()
        opt.found_inf = torch.tensor(0.0)
        opt.step()
    for k, v in a.state_dict().items():
        torch.testing.assert_close(v, b.state_dict()[k], rtol=0, atol=0)
