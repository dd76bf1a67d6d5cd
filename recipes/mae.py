#!/usr/bin/env python
"""MAE on image shards (mmssl.objectives.mae): a ViT encoder on the visible 25% of patches.

    accelerate launch recipes/mae.py --config recipes/configs/mae_demo.yaml key=value ...

Keys: mmssl.recipe_image.IMAGE_SSL_DEFAULTS, `vit.*` (the encoder, mmssl.models.vit.ViT; its
image size is `image_size`) and `mae.*` (the objective). At every evaluation it also writes
`reconstructions/step_XXXXXXX.png`: rows of original | masked | reconstruction for held-out images.
"""
from pathlib import Path

import torch

from mmssl.cli import run_main
from mmssl.config import Key, constructor_keys, set_defaults
from mmssl.data import ImageField, build_loader, eval_transform
from mmssl.models.masking import patchify, unpatchify
from mmssl.models.vit import ViT
from mmssl.objectives.mae import MAE
from mmssl.recipe_image import IMAGE_SSL_DEFAULTS, one_image, run_image_recipe

DEFAULTS = set_defaults({k: v for k, v in IMAGE_SSL_DEFAULTS.items() if k != "backbone"}, {
    "output_dir": "runs/mae",
    "vit": {"patch_size": Key(4, "pixels per patch side", min=1), "dim": Key(192, "token width", min=1),
            "depth": Key(6, "encoder blocks", min=1), "heads": Key(3, "attention heads", min=1),
            "mlp_ratio": Key(4.0, "MLP width / token width", above=0)},
    # The CPU demo's decoder is smaller than MAE's default (512 wide, 8 deep).
    "mae": constructor_keys(MAE, decoder_dim=128, decoder_depth=2, decoder_heads=4),
    "reconstructions": Key(8, "held-out images in each evaluation's reconstruction picture", min=0)})


def objective(cfg):
    return MAE(ViT(image_size=cfg["image_size"], **cfg["vit"]), **cfg["mae"])


@torch.no_grad()
def reconstruction_grid(model: MAE, images: torch.Tensor) -> torch.Tensor:
    """[N, 3, S, S] -> [N, 3, S, 3S]: original | masked (hidden patches grey) | reconstruction with the
    visible patches pasted back. A norm_pix prediction is put back in pixel units with each target
    patch's own mean and variance, as in the MAE paper's figures."""
    p, s = model.backbone.patch_size, images.shape[-1]
    _, pred, mask, _ = model.reconstruct(images)
    patches = patchify(images, p)
    if model.norm_pix:
        mean, var = patches.mean(-1, keepdim=True), patches.var(-1, keepdim=True)
        pred = pred * (var + 1e-6).sqrt() + mean
    m = mask.unsqueeze(-1)
    masked = unpatchify(patches * (1 - m), p, 3, s, s)
    recon = unpatchify(patches * (1 - m) + pred * m, p, 3, s, s)
    return torch.cat([images, masked, recon], dim=-1)


def save_reconstructions(model, step, cfg) -> dict:
    from PIL import Image

    from mmssl.data.image import tensor_to_pil

    loader = build_loader(cfg["data"]["val"], [ImageField(eval_transform(cfg["image_size"]))], cfg["reconstructions"],
                          split=cfg["eval_split"], shuffle=False, drop_last=False, num_workers=0, rank=0, world_size=1)
    images = next(iter(loader))["image"].to(next(model.parameters()).device)
    rows = [tensor_to_pil(r) for r in reconstruction_grid(model, images)]
    sheet = Image.new("RGB", (rows[0].width, rows[0].height * len(rows)))
    for i, r in enumerate(rows):
        sheet.paste(r, (0, i * r.height))
    scale = max(1, 96 // rows[0].height)
    sheet = sheet.resize((sheet.width * scale, sheet.height * scale), Image.NEAREST)
    out = Path(cfg["output_dir"]) / "reconstructions" / f"step_{step:07d}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return {"reconstructions": str(out)}


if __name__ == "__main__":
    run_main(lambda argv: run_image_recipe(argv, DEFAULTS, one_image, objective, save_reconstructions))
