"""Image-text models for evaluation: a trained CLIP objective, in memory or loaded from a run."""
from __future__ import annotations

from pathlib import Path

import torch

from ..models.encoders import build_encoder


class ClipEval:
    """Adapts a `CLIP` objective (and its tokenizer) to the task interface of `eval.tasks`."""

    def __init__(self, clip, tokenizer, max_length: int = 32):
        self.clip, self.tokenizer, self.max_length = clip, tokenizer, max_length

    def _device(self):
        return next(self.clip.parameters()).device

    @torch.no_grad()
    def image_features(self, images):
        return self.clip.image_encoder(images.to(self._device()))

    @torch.no_grad()
    def image_embed(self, images):
        return self.clip.embed_image(images.to(self._device()))

    @torch.no_grad()
    def text_embed(self, texts: list[str]):
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        dev = self._device()
        return self.clip.embed_text(enc["input_ids"].to(dev), enc["attention_mask"].to(dev))


def load_clip_run(run_dir: Path, cfg: dict) -> ClipEval:
    """Rebuild a CLIP from `run_dir/encoder/` (towers in their own formats + heads.safetensors)."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from ..objectives.clip import CLIP

    enc_dir = Path(run_dir) / "encoder"
    image = build_encoder({**cfg["image_encoder"], "name": str(enc_dir / "image"), "config": {}, "freeze": True})
    text = build_encoder({**cfg["text_encoder"], "name": str(enc_dir / "text"), "config": {}, "freeze": True})
    heads = load_file(str(enc_dir / "heads.safetensors"))
    clip = CLIP(image, text, embed_dim=heads["image_proj.weight"].shape[0], loss=cfg.get("loss", "clip"))
    clip.image_proj.weight.data.copy_(heads["image_proj.weight"])
    clip.text_proj.weight.data.copy_(heads["text_proj.weight"])
    clip.logit_scale.data.copy_(heads["logit_scale"])
    clip.eval()
    tokenizer = AutoTokenizer.from_pretrained(str(enc_dir / "text"))
    return ClipEval(clip, tokenizer, cfg.get("max_text_length", 32))
