"""kNN and linear probes on frozen clip features over labelled video shards (the motion set)."""
from __future__ import annotations

from ..data import LabelField, VideoField, build_loader
from .features import extract
from .knn import knn_accuracy
from .linear_probe import linear_probe


def video_probes(video_features, data: str, split: str, train_split: str = "train", num_frames: int = 16,
                 stride: int = 1, size: int = 96, batch_size: int = 32, workers: int = 0) -> dict:
    """video_features(video [B,T,C,H,W]) -> [B, D]. Centre clips and crops of `split` are classified
    with `train_split` as the kNN bank and the probe's training set; returns one flat dict."""
    def features(which: str) -> dict:
        fields = [VideoField(num_frames, stride, size, train=False), LabelField()]
        # One process reads the split in order: every clip is used exactly once.
        loader = build_loader(data, fields, batch_size, split=which, shuffle=False, drop_last=False,
                              num_workers=workers, rank=0, world_size=1)
        return extract(loader, lambda b: video_features(b["video"]))

    test, train = features(split), features(train_split)
    return {"eval_samples": len(test["key"]), **knn_accuracy(train["features"], train["label"], test["features"],
                                                              test["label"]),
            **linear_probe(train["features"], train["label"], test["features"], test["label"])}
