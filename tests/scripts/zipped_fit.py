"""Train a tiny model through `mmssl.train.fit` on two named streams at once (a labelled and an
unlabelled one, FixMatch's shape), logging the keys of every step: what tests/test_train.py kills
and resumes. Usage: zipped_fit.py SHARDS key=value ... (train keys: output_dir, max_steps, ...)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch import nn

from mmssl.config import from_cli
from mmssl.data import ImageField, LabelField, ZippedLoaders, build_loader, train_transform
from mmssl.train import TRAIN_DEFAULTS, fit, start


class TwoStreams(nn.Module):
    """A linear classifier on the labelled stream plus a consistency term on the unlabelled one."""

    def __init__(self, log: Path):
        super().__init__()
        self.net, self.log = nn.Linear(3 * 8 * 8, 10), log

    def forward(self, batch: dict, progress: float = 0.0) -> dict:
        lab, unl = batch["labelled"], batch["unlabelled"]
        with open(self.log, "a") as f:
            f.write(json.dumps({"progress": progress, "labelled": lab["key"], "unlabelled": unl["key"]}) + "\n")
        logits = self.net(lab["image"].flatten(1))
        loss = nn.functional.cross_entropy(logits, lab["label"]) + self.net(unl["image"].flatten(1)).pow(2).mean() * 1e-3
        return {"loss": loss}

    def save_pretrained(self, directory) -> None:
        from safetensors.torch import save_file

        Path(directory).mkdir(parents=True, exist_ok=True)
        save_file(self.state_dict(), str(Path(directory) / "model.safetensors"))


def main() -> None:
    shards, argv = sys.argv[1], sys.argv[2:]
    cfg = from_cli(TRAIN_DEFAULTS, argv)
    accelerator = start(cfg)
    field = [ImageField(train_transform(8))]
    loaders = ZippedLoaders({
        "labelled": build_loader(shards, field + [LabelField()], 4, split="train", seed=cfg["seed"], shuffle_buffer=8),
        "unlabelled": build_loader(shards, field, 8, split="test", seed=cfg["seed"] + 1, shuffle_buffer=8,
                                   num_workers=cfg["num_workers"]),
    })
    torch.manual_seed(0)
    fit(accelerator, cfg, TwoStreams(Path(cfg["output_dir"]) / "keys.jsonl"), loaders)


if __name__ == "__main__":
    main()
