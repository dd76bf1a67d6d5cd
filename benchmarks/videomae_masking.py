#!/usr/bin/env python
"""VideoMAE: a training step at 90% tube masking against 0% on the same model and clips.

    python benchmarks/videomae_masking.py [--frames 16 --size 112 --batch 4 --repeats 5]

One model (transformers' VideoMAEForPreTraining: a ViT-S-sized encoder, 384 wide and 6 deep, with
a 192-wide, 2-block decoder), one batch of random clips, in one run: the median time of a
training step (forward + backward + AdamW) and of the encoder forward alone, at mask ratio 0.9
against 0.0 (the unmasked encoder, decoding every token), alternating the two. The token
arithmetic to compare with: at 0.9 the encoder sees about 10% of the tubelet tokens, and its
attention cost falls with the square of that; the decoder sees all tokens either way.
Target on CPU: step ratio <= 0.3.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from masking_timing import alternating_medians, train_step  # noqa: E402

from mmssl.objectives.videomae import VideoMAE, load_videomae  # noqa: E402

VIT_S = {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 6, "intermediate_size": 1536,
         "decoder_hidden_size": 192, "decoder_num_hidden_layers": 2, "decoder_num_attention_heads": 3,
         "decoder_intermediate_size": 768, "patch_size": 16, "tubelet_size": 2}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--depth", type=int, default=6, help="encoder blocks (ViT-B: 12 with --width 768)")
    p.add_argument("--width", type=int, default=384)
    p.add_argument("--ratio", type=float, default=0.9)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    dev = torch.device(args.device)
    cfg = {**VIT_S, "hidden_size": args.width, "num_hidden_layers": args.depth, "num_attention_heads": args.width // 64,
           "intermediate_size": 4 * args.width}
    model = VideoMAE(load_videomae("", cfg, args.frames, args.size), args.ratio).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    video = torch.randn(args.batch, args.frames, 3, args.size, args.size, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    step = train_step(lambda ratio: model.reconstruct(video, ratio)[0], opt, sync)

    def encode(ratio):
        def run():
            with torch.no_grad():
                model.backbone(video, bool_masked_pos=model.mask(video, ratio))
            sync()
        return run

    settings = (0.0, args.ratio)
    results = {kind: alternating_medians(make, settings, args.repeats)
               for kind, make in (("train step (fwd+bwd)", step), ("encoder forward", encode))}
    mask = model.mask(video, args.ratio)
    tokens, visible = mask.shape[1], int((~mask[0]).sum())
    print(f"device {dev}, torch threads {torch.get_num_threads()}, encoder {args.width} wide x {args.depth} deep, "
          f"clips {args.frames}x{args.size}px, batch {args.batch}, {tokens} tubelet tokens")
    for kind, r in results.items():
        print(f"{kind:22s} mask 0.0 {r[0.0]:8.1f} ms   mask {args.ratio} {r[args.ratio]:8.1f} ms   "
              f"ratio {r[args.ratio] / r[0.0]:.2f}")
    print(f"token arithmetic: the encoder sees {visible} of {tokens} tokens ({visible / tokens:.2f}); "
          "attention cost falls with its square, the decoder always sees all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
