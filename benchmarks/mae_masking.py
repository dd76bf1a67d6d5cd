#!/usr/bin/env python
"""MAE: step time falls with the mask ratio, because the encoder only sees the visible patches.

    python benchmarks/mae_masking.py [--image-size 64 --patch 8 --dim 192 --depth 6 --batch 64]

One model, one batch, in one run: the median time of a training step (forward + backward) and of
the encoder forward alone, at mask ratio 0.75 against 0.0 (the unmasked encoder, decoding every
patch), alternating the two settings. The token arithmetic to compare with: at 0.75 the encoder
sees 25% of the patch tokens (plus the class token).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from masking_timing import alternating_medians, train_step  # noqa: E402

from mmssl.models.vit import ViT  # noqa: E402
from mmssl.objectives.mae import MAE  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--patch", type=int, default=8)
    p.add_argument("--dim", type=int, default=192)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    dev = torch.device(args.device)
    model = MAE(ViT(args.image_size, args.patch, dim=args.dim, depth=args.depth, heads=max(1, args.dim // 64)),
                decoder_dim=128, decoder_depth=2, decoder_heads=4).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randn(args.batch, 3, args.image_size, args.image_size, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    step = train_step(lambda ratio: model.reconstruct(images, ratio)[0], opt, sync)

    def encode(ratio):
        def run():
            with torch.no_grad():
                model.backbone.tokens(images, ratio)
            sync()
        return run

    results = {kind: alternating_medians(make, (0.0, 0.75), args.repeats)
               for kind, make in (("train step (fwd+bwd)", step), ("encoder forward", encode))}
    tokens = model.backbone.num_patches
    keep = int(tokens * 0.25)
    print(f"device {dev}, torch threads {torch.get_num_threads()}, ViT dim {args.dim} depth {args.depth}, "
          f"{tokens} patches of {args.patch}px, batch {args.batch}")
    for kind, r in results.items():
        print(f"{kind:22s} mask 0.0 {r[0.0]:8.1f} ms   mask 0.75 {r[0.75]:8.1f} ms   ratio {r[0.75] / r[0.0]:.2f}")
    print(f"token arithmetic: the encoder sees {keep + 1} of {tokens + 1} tokens ({(keep + 1) / (tokens + 1):.2f}); "
          "attention cost falls with its square, the decoder always sees all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
