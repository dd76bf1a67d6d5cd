"""The GPU-path options of every recipe, checked for correctness on the CPU: `channels_last`,
`compile` (torch.compile, inductor), `mixed_precision=bf16` (autocast through accelerate) and the
fused AdamW that fit's device-side guard relies on. Each trains the same SimCLR steps as the plain
fp32 run and must follow its loss; none is claimed faster here (benchmarks/gpu_throughput.py)."""
from __future__ import annotations

import json

import pytest
import torch
from accelerate.state import AcceleratorState

from mmssl.config import ConfigError, plain
from mmssl.data import training_loader
from mmssl.recipe_image import VIEWS, build_objective, image_defaults
from mmssl.train import fit, start


def train(tmp_path, fashion_shards, name: str, watch: bool = True, **options):
    """Losses of 4 SimCLR steps; with `watch`, the dtype and memory format of the first convolution's
    output at each step (a hook a compiled model would have to guard on)."""
    cfg = plain(image_defaults("simclr"))
    cfg.update({"output_dir": str(tmp_path / name), "max_steps": 4, "log_every": 1, "save_every": 0, "batch_size": 16,
                "num_workers": 0, "tensorboard": False, "warmup_steps": 0, "lr": 1e-3, **options})
    cfg["data"].update({"train": str(fashion_shards), "val": ""})
    torch.manual_seed(0)
    objective = build_objective(cfg)
    dtypes = []
    first_conv = next(m for m in objective.modules() if isinstance(m, torch.nn.Conv2d))
    watch and first_conv.register_forward_hook(lambda m, args, out: dtypes.append((out.dtype, out.is_contiguous(
        memory_format=torch.channels_last) and not out.is_contiguous())))
    # One process holds one accelerate state; a test that changes the precision starts a new one.
    AcceleratorState._reset_state(reset_partial_state=True)
    accelerator = start(cfg)
    fit(accelerator, cfg, objective, training_loader(cfg, VIEWS[objective.views](cfg)))
    AcceleratorState._reset_state(reset_partial_state=True)
    rows = [json.loads(ln) for ln in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    losses = torch.tensor([r["loss"] for r in rows if "loss" in r and "event" not in r])
    return losses, dtypes, objective


@pytest.fixture(scope="module")
def reference(fashion_shards, tmp_path_factory):
    return train(tmp_path_factory.mktemp("ref"), fashion_shards, "fp32")


def test_the_reference_run_is_plain_fp32_in_the_default_memory_format(reference):
    losses, dtypes, _ = reference
    assert len(losses) == 4 and dtypes[0] == (torch.float32, False)


def test_channels_last_keeps_weights_and_images_in_that_format_and_the_same_losses(reference, fashion_shards, tmp_path):
    losses, dtypes, objective = train(tmp_path, fashion_shards, "cl", channels_last=True)
    conv = next(m for m in objective.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    assert all(cl for _, cl in dtypes)  # the activations came out channels-last too
    torch.testing.assert_close(losses[0], reference[0][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(losses, reference[0], rtol=1e-3, atol=1e-3)


def test_bf16_autocast_runs_the_convolutions_in_bfloat16_and_follows_the_fp32_losses(reference, fashion_shards, tmp_path):
    losses, dtypes, _ = train(tmp_path, fashion_shards, "bf16", mixed_precision="bf16")
    assert {d for d, _ in dtypes} == {torch.bfloat16}
    torch.testing.assert_close(losses, reference[0], rtol=0.03, atol=0.03)
    assert not torch.equal(losses, reference[0])  # it did run in another precision


def test_compile_follows_the_eager_losses_without_recompiling(reference, fashion_shards, tmp_path):
    """Dynamo capture and AOT autograd around our objective, the parts our code can break (graph
    breaks, a guard on a per-step value that would recompile every step); inductor's code
    generation (`compile=inductor`, a minute of C++ compilation here) is PyTorch's to test."""
    import torch._dynamo

    torch._dynamo.reset()
    with torch._dynamo.config.patch(error_on_recompile=True):
        losses, _, objective = train(tmp_path, fashion_shards, "compiled", False, compile="aot_eager")
    assert objective._compiled_call_impl is not None
    torch.testing.assert_close(losses[0], reference[0][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(losses, reference[0], rtol=1e-3, atol=1e-3)


def test_fp16_on_a_machine_without_a_gpu_is_refused_before_anything_is_written(tmp_path):
    cfg = {**plain(image_defaults("simclr")), "output_dir": str(tmp_path / "run"), "mixed_precision": "fp16"}
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        start(cfg)
    assert not (tmp_path / "run").exists()
