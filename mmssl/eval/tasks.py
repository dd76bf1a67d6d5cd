"""The evaluation tasks over shards, shared by `python -m mmssl.eval` and in-training evaluation.

A *model* here is any object with some of:
- `image_features(images [B,3,H,W]) -> [B, D]`: the frozen backbone (kNN, linear probe);
- `image_embed(images) -> [B, E]` and `text_embed(list[str]) -> [B, E]`: a joint image-text
  space (zero-shot classification, retrieval).

Retrieval groups the captions of one image by the `image_id` make_shards writes (COCO protocol;
see mmssl.eval.retrieval), and ties score at chance.
"""
from __future__ import annotations

import torch

from ..collapse import effective_rank
from ..data import ImageField, ImageIdField, LabelField, TextField, build_loader, eval_transform, resolve_source
from .features import extract
from .knn import knn_accuracy
from .linear_probe import linear_probe
from .retrieval import recall_at_k
from .zero_shot import class_embeddings, zero_shot_accuracy

TASKS = ("knn", "linear", "zero-shot", "retrieval")


def _loader(data: str, split: str, size: int, text: bool, label: bool, batch_size: int, workers: int,
            resize: int | None = None):
    fields = [ImageField(eval_transform(size, resize))]
    if text:
        fields += [TextField(), ImageIdField()]
    if label:
        fields.append(LabelField())
    # One process reads the whole split in order: evaluation sees every sample exactly once.
    return build_loader(data, fields, batch_size, split=split, shuffle=False, drop_last=False,
                        num_workers=workers, rank=0, world_size=1)


def run_tasks(model, tasks, data: str, split: str = "val", image_size: int = 224, batch_size: int = 64,
              workers: int = 2, train_split: str = "train", resize: int | None = None) -> dict:
    """Evaluate `model` on `data` (a make_shards folder) for each task; returns one flat dict. Images are
    resized (shorter side to `resize`, round(image_size / 0.875) by default) and centre-cropped."""
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown eval task '{unknown[0]}' (choose from {', '.join(TASKS)})")
    out: dict = {}
    if not tasks:  # `eval_tasks=[]`: nothing to measure, so read nothing
        return out
    needs_labels = any(t in tasks for t in ("knn", "linear", "zero-shot"))
    ev = _loader(data, split, image_size, "retrieval" in tasks, needs_labels, batch_size, workers, resize)
    test = extract(ev, lambda b: model.image_features(b["image"]) if any(t in tasks for t in ("knn", "linear"))
                   else model.image_embed(b["image"]))
    out["eval_samples"] = len(test["key"])
    if any(t in tasks for t in ("knn", "linear")):
        # Label-free health of the frozen features: how many directions they really use.
        out["feature_rank"] = effective_rank(test["features"])
        tr = extract(_loader(data, train_split, image_size, False, True, batch_size, workers, resize),
                     lambda b: model.image_features(b["image"]))
        if "knn" in tasks:
            out.update(knn_accuracy(tr["features"], tr["label"], test["features"], test["label"]))
        if "linear" in tasks:
            out.update(linear_probe(tr["features"], tr["label"], test["features"], test["label"]))
    if "zero-shot" in tasks or "retrieval" in tasks:
        joint = test if not any(t in tasks for t in ("knn", "linear")) else extract(
            _loader(data, split, image_size, "retrieval" in tasks, True, batch_size, workers, resize),
            lambda b: model.image_embed(b["image"]))
        if "zero-shot" in tasks:
            names = resolve_source(data, split).labels
            if not names:
                raise ValueError(f"{data} has no label names for zero-shot classification")
            classes = class_embeddings(model.text_embed, names)
            out.update(zero_shot_accuracy(joint["features"], joint["label"], classes))
            out["zero_shot_chance"] = 1.0 / len(names)
        if "retrieval" in tasks:
            text_emb = torch.cat([model.text_embed(joint["text"][i : i + batch_size])
                                  for i in range(0, len(joint["text"]), batch_size)])
            out.update(recall_at_k(joint["features"], text_emb, groups=joint.get("image_id")))
            out["retrieval_chance_R@1"] = 1.0 / out["retrieval_images"]
    return out
