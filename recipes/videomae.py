#!/usr/bin/env python
"""VideoMAE on video shards (mmssl.objectives.videomae): 90% tube masking, encoder on visible tokens.

    accelerate launch recipes/videomae.py --config recipes/configs/videomae_demo.yaml key=value ...

Keys: mmssl.recipe_video.VIDEO_DEFAULTS plus
  videomae.init        Hub id or folder of a VideoMAE checkpoint to start from ('' = from config)
  videomae.config      transformers VideoMAEConfig keys (ignored with init; frames and size come
                       from num_frames and image_size)
  videomae.mask_ratio  share of tube positions hidden (0.9)
  videomae.norm_eps    added to each tubelet's std when targets are normalised (pixel units)
  videomae.pool        probe features: time (per-slot means, in order) or tokens (one mean)
  reconstructions      held-out clips drawn at each evaluation (reconstructions/step_XXXXXXX.png)

Each evaluation also logs `held_out_loss` on up to 64 held-out clips under fixed tube masks and
`held_out_zero_loss`, the loss of predicting zeros there: the level a model that learned nothing sits at.

After training, `encoder/` holds the encoder as a transformers `VideoMAEModel` (AutoModel loads it)
and `pretraining/` the whole `VideoMAEForPreTraining`, which `videomae.init` accepts.
"""
import itertools
from pathlib import Path

import torch

from mmssl.cli import run_main
from mmssl.config import Key, constructor_keys, set_defaults
from mmssl.data import VideoField, build_loader
from mmssl.models.masking import tubelet_patchify, tubelet_unpatchify
from mmssl.objectives.videomae import VideoMAE, load_videomae
from mmssl.recipe_video import VIDEO_DEFAULTS, run_video_recipe

DEFAULTS = set_defaults(VIDEO_DEFAULTS, {
    "output_dir": "runs/videomae",
    "videomae": {"init": Key("", "a VideoMAEForPreTraining Hub id or folder to start from ('': a fresh model)"),
                 "config": Key({}, "transformers VideoMAEConfig keys for a fresh model (hidden_size, patch_size, ...)"),
                 **constructor_keys(VideoMAE)},
    "reconstructions": Key(4, "held-out clips drawn at each evaluation (reconstructions/step_XXXXXXX.png)", min=0)})


def objective(cfg):
    v = cfg["videomae"]
    return VideoMAE(load_videomae(v["init"], v["config"], cfg["num_frames"], cfg["image_size"]),
                    **{k: v[k] for k in constructor_keys(VideoMAE)})


@torch.no_grad()
def reconstruction_clips(model: VideoMAE, video: torch.Tensor) -> torch.Tensor:
    """[N, T, 3, H, W] normalised -> [N, 3, T, 3, H, W]: original | masked (hidden tubes grey) |
    reconstruction with the visible tubelets pasted back, in normalised units. Normalised
    predictions are put back in pixels with each target tubelet's own per-channel mean and std."""
    n, t, c, h, w = video.shape
    _, pred, mask, _, _ = model.reconstruct(video)
    pixels = video * model.std + model.mean
    tubes = tubelet_patchify(pixels, model.tubelet, model.patch)  # [N, L, t*p*p, C]
    hidden = tubes[mask].reshape(n, -1, *tubes.shape[2:])
    pred = pred.reshape(hidden.shape[0], hidden.shape[1], -1, c)
    if model.norm_pix:
        pred = pred * (hidden.var(-2, unbiased=True, keepdim=True).sqrt() + model.norm_eps) + hidden.mean(-2, keepdim=True)
    filled, grey = tubes.clone(), tubes.clone()
    filled[mask] = pred.reshape(-1, *tubes.shape[2:]).clamp(0, 1)
    grey[mask] = 0.5
    back = [tubelet_unpatchify(x, model.tubelet, model.patch, t, h, w) for x in (grey, filled)]
    return (torch.stack([pixels, *back], 1) - model.mean.unsqueeze(1)) / model.std.unsqueeze(1)


@torch.no_grad()
def held_out(model, step, cfg) -> dict:
    """Each evaluation: the loss on up to 64 held-out clips under fixed tube masks, beside the loss
    of predicting zeros there (`held_out_loss`, `held_out_zero_loss`: a model that learned nothing
    scores the latter), and with `reconstructions` > 0 the PNG of `save_reconstructions`."""
    field = VideoField(cfg["num_frames"], cfg["stride"], cfg["image_size"], train=False)
    loader = build_loader(cfg["data"]["val"], [field], 32, split=cfg["eval_split"], shuffle=False,
                          drop_last=False, num_workers=0, rank=0, world_size=1)
    device = next(model.parameters()).device
    video = torch.cat([b["video"] for b in itertools.islice(loader, 2)]).to(device)
    with torch.random.fork_rng(devices=[]):  # the same masks at every evaluation; training's RNG untouched
        torch.manual_seed(0)
        loss, _, _, _, zero = model.reconstruct(video)
    out = {"held_out_loss": float(loss), "held_out_zero_loss": float(zero)}
    if cfg["reconstructions"]:
        out.update(save_reconstructions(model, step, cfg, video[: cfg["reconstructions"]]))
    return out


def save_reconstructions(model, step, cfg, video: torch.Tensor) -> dict:
    """A PNG per evaluation: for each held-out clip, rows original / masked / reconstruction, one
    column per frame."""
    from PIL import Image

    from mmssl.data.image import tensor_to_pil

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        grid = reconstruction_clips(model, video)  # [N, 3, T, C, H, W]
    n, rows, t, _, h, w = grid.shape
    gap = 4
    sheet = Image.new("RGB", (t * w, n * (rows * h + gap)), (255, 255, 255))
    for i in range(n):
        for r in range(rows):
            for f in range(t):
                sheet.paste(tensor_to_pil(grid[i, r, f]), (f * w, i * (rows * h + gap) + r * h))
    out = Path(cfg["output_dir"]) / "reconstructions" / f"step_{step:07d}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return {"reconstructions": str(out)}


def main(argv=None) -> int:
    return run_video_recipe(argv, DEFAULTS, objective, held_out)


if __name__ == "__main__":
    run_main(main)
