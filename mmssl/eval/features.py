"""Run an embedding function over a loader and collect features, labels, keys and captions."""
from __future__ import annotations

import torch


@torch.no_grad()
def extract(loader, embed, device="cpu") -> dict:
    """embed(batch) -> [B, D]. Returns {"features" [N, D] (float32, CPU), "label" [N] if present,
    "key" list, "text" and "image_id" lists if present}."""
    feats, labels, keys, texts, image_ids = [], [], [], [], []
    for batch in loader:
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        feats.append(embed(batch).float().cpu())
        keys.extend(batch["key"])
        if "label" in batch:
            labels.append(batch["label"].cpu())
        if "text" in batch:
            texts.extend(batch["text"])
        if "image_id" in batch:
            image_ids.extend(batch["image_id"])
    if not feats:
        raise ValueError("the evaluation split delivered no samples")
    out = {"features": torch.cat(feats), "key": keys}
    if labels:
        out["label"] = torch.cat(labels)
    if texts:
        out["text"] = texts
    if image_ids:
        out["image_id"] = image_ids
    return out
