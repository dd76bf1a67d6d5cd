#!/usr/bin/env python
"""Write the report of a CLIP run: held-out figures next to chance and an untrained model.

    python tools/clip_report.py runs/demo --data shards/default_images [--split val]

Writes RUN/report.md (the figures), RUN/retrieval.png (for held-out captions, the five images the
model ranks first; the true image framed in green) and keeps RUN/loss.png from training.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmssl.cli import run_main  # noqa: E402
from mmssl.config import ConfigError  # noqa: E402
from mmssl.data import ImageField, LabelField, TextField, build_loader, eval_transform, read_manifest  # noqa: E402
from mmssl.eval.clip_model import ClipEval, load_clip_run  # noqa: E402
from mmssl.eval.features import extract  # noqa: E402
from mmssl.eval.tasks import run_tasks  # noqa: E402

TASKS = ["retrieval", "zero-shot", "knn", "linear"]


def untrained(cfg: dict) -> ClipEval:
    """The same architecture, freshly initialised with the run's seed (pretrained towers stay pretrained)."""
    from transformers import AutoTokenizer

    from mmssl.models.encoders import build_encoder, resolve_name
    from mmssl.objectives.clip import CLIP

    torch.manual_seed(cfg["seed"])
    clip = CLIP(build_encoder(cfg["image_encoder"]), build_encoder(cfg["text_encoder"]), cfg["embed_dim"]).eval()
    tok = AutoTokenizer.from_pretrained(cfg["tokenizer"] or resolve_name(cfg["text_encoder"]["name"]))
    return ClipEval(clip, tok, cfg["max_text_length"])


def retrieval_grid(model: ClipEval, data: str, split: str, size: int, out: Path, queries: int = 8, top: int = 5) -> None:
    from PIL import Image, ImageDraw

    from mmssl.data.image import tensor_to_pil as to_pil

    loader = build_loader(data, [ImageField(eval_transform(size)), TextField()], 64, split=split, shuffle=False,
                          drop_last=False, rank=0, world_size=1)
    images, texts = [], []
    feats = extract(loader, lambda b: (images.append(b["image"]), texts.extend(b["text"]), model.image_embed(b["image"]))[2])
    pixels = torch.cat(images)
    step = max(1, len(texts) // queries)
    picks = list(range(0, len(texts), step))[:queries]
    text_emb = model.text_embed([texts[i] for i in picks])
    sims = text_emb @ feats["features"].t()
    cell, caption_w = 96, 260
    sheet = Image.new("RGB", (caption_w + top * (cell + 4), len(picks) * (cell + 8)), "white")
    draw = ImageDraw.Draw(sheet)
    for row, i in enumerate(picks):
        y = row * (cell + 8)
        draw.text((4, y + cell // 2 - 6), f'"{texts[i][:40]}"', fill="black")
        for col, j in enumerate(sims[row].topk(top).indices.tolist()):
            x = caption_w + col * (cell + 4)
            sheet.paste(to_pil(pixels[j]).resize((cell, cell)), (x, y))
            if j == i:
                draw.rectangle([x, y, x + cell - 1, y + cell - 1], outline=(0, 170, 0), width=4)
    sheet.save(out)


def majority_baseline(data: str, split: str) -> float:
    loader = build_loader(data, [LabelField()], 256, split=split, shuffle=False, drop_last=False, rank=0, world_size=1)
    labels = Counter(int(x) for b in loader for x in b["label"])
    return max(labels.values()) / sum(labels.values())


def fmt(x) -> str:
    return f"{100 * x:.1f}%" if isinstance(x, float) else str(x)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="val")
    args = p.parse_args(argv)
    if not (args.run_dir / "encoder" / "heads.safetensors").exists():
        raise ConfigError(f"{args.run_dir} holds no trained CLIP (encoder/heads.safetensors is missing)")
    cfg = yaml.safe_load((args.run_dir / "config.yaml").read_text())
    size = cfg["image_size"]
    t = time.perf_counter()
    trained = run_tasks(load_clip_run(args.run_dir, cfg), TASKS, args.data, args.split, size)
    base = run_tasks(untrained(cfg), TASKS, args.data, args.split, size)
    majority = majority_baseline(args.data, args.split)
    records = [json.loads(ln) for ln in (args.run_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    train = [r for r in records if "loss" in r and "event" not in r]
    manifest = read_manifest(args.data)
    n = trained["eval_samples"]
    rows = [
        ("image → text R@1", "image_to_text_R@1", 1 / n), ("image → text R@5", "image_to_text_R@5", 5 / n),
        ("image → text R@10", "image_to_text_R@10", 10 / n), ("text → image R@1", "text_to_image_R@1", 1 / n),
        ("text → image R@5", "text_to_image_R@5", 5 / n), ("text → image R@10", "text_to_image_R@10", 10 / n),
        (f"zero-shot top-1 ({len(manifest['labels'])} classes)", "zero_shot_top1", trained["zero_shot_chance"]),
        ("zero-shot top-5", "zero_shot_top5", 5 * trained["zero_shot_chance"]),
        ("kNN top-1 (k=20, image tower)", "knn_top1@20", majority),
        ("linear probe top-1 (image tower)", "linear_top1", majority),
    ]
    lines = [
        f"# CLIP run `{args.run_dir.name}`", "",
        f"Trained {train[-1]['step'] if train else 0} steps of batch {cfg['batch_size']} on `{cfg['data']['train']}` "
        f"(image tower `{cfg['image_encoder']['name']}` at {size} px; text tower `{cfg['text_encoder']['name']}`, "
        f"{'locked' if cfg['text_encoder'].get('freeze') else 'fine-tuned'}). Loss {train[0]['loss']:.3f} at step "
        f"{train[0]['step']} → {train[-1]['loss']:.3f} at step {train[-1]['step']}." if train else "",
        "",
        f"Held-out split `{args.split}` of `{args.data}`: {n} image–caption pairs. Chance for retrieval is k/{n}; for "
        f"zero-shot, 1/classes; for kNN and linear probes the majority class ({fmt(majority)}). The untrained column is "
        "the same architecture before training (pretrained towers included).",
        "",
        "| metric | trained | untrained | chance |",
        "|---|---|---|---|",
    ]
    lines += [f"| {name} | {fmt(trained[key])} | {fmt(base[key])} | {fmt(chance)} |" for name, key, chance in rows]
    lines += ["", "![loss](loss.png)", "", "![retrieval](retrieval.png)", "",
              "Retrieval examples: for held-out captions, the five images ranked first; the true image is framed in green.",
              "", f"Report written in {time.perf_counter() - t:.0f}s by `python tools/clip_report.py {args.run_dir} "
              f"--data {args.data}`."]
    (args.run_dir / "report.md").write_text("\n".join(lines) + "\n")
    retrieval_grid(load_clip_run(args.run_dir, cfg), args.data, args.split, size, args.run_dir / "retrieval.png")
    summary = {k: trained[k] for _, k, _ in rows}
    print(json.dumps({"report": str(args.run_dir / "report.md"), **summary, "untrained": {k: base[k] for _, k, _ in rows},
                      "chance": {k: chance for _, k, chance in rows}}))
    print("\n".join(lines[6:6 + len(rows) + 2]))
    return 0


if __name__ == "__main__":
    run_main(main)
