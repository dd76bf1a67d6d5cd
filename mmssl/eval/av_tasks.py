"""Audio-visual evaluation: frame <-> sound retrieval on held-out pairs, and probes of sound embeddings."""
from __future__ import annotations

import torch

from ..data import AudioField, AVPairField, LabelField, build_loader, eval_transform
from .features import extract
from .knn import knn_accuracy
from .linear_probe import linear_probe
from .retrieval import recall_from_scores


@torch.no_grad()
def av_retrieval(pair_scores, data: str, split: str, image_size: int, audio: AudioField, batch_size: int = 64) -> dict:
    """pair_scores(image [N,3,S,S], mel [M,...]) -> [N, M]. Each held-out video gives its middle frame
    and the sound around it; -> visual_to_audio_R@k and audio_to_visual_R@k (k = 1, 5, 10), chance R@1."""
    field = AVPairField(eval_transform(image_size), audio, train=False)
    loader = build_loader(data, [field], batch_size, split=split, shuffle=False, drop_last=False, num_workers=0,
                          rank=0, world_size=1)
    images, sounds = [], []
    for batch in loader:
        images.append(batch["image"])
        sounds.append(batch[audio.out_key])
    if not images:
        raise ValueError(f"{data} split '{split}' delivered no audio-visual pairs")
    scores = pair_scores(torch.cat(images), torch.cat(sounds))
    out = recall_from_scores(scores.float().cpu(), names=("visual", "audio"))
    return {**out, "av_pairs": scores.shape[0], "av_chance_R@1": 1.0 / scores.shape[0]}


@torch.no_grad()
def audio_probes(features, data: str, split: str, audio: AudioField, train_split: str = "train",
                 batch_size: int = 64) -> dict:
    """features(x [B, ...], samples [B] or None) -> [B, D] on the field's output (`samples`: the real
    samples of each waveform window before padding; None for log-mels); kNN and linear probe of the
    labels of `split`, with `train_split` as bank and training set."""
    def extract_split(which):
        loader = build_loader(data, [audio, LabelField()], batch_size, split=which, shuffle=False, drop_last=False,
                              num_workers=0, rank=0, world_size=1)
        return extract(loader, lambda b: features(b[audio.out_key], b.get(f"{audio.out_key}_samples")))

    test, train = extract_split(split), extract_split(train_split)
    return {"audio_eval_samples": len(test["key"]),
            **{f"audio_{k}": v for k, v in knn_accuracy(train["features"], train["label"], test["features"],
                                                         test["label"]).items()},
            **{f"audio_{k}": v for k, v in linear_probe(train["features"], train["label"], test["features"],
                                                         test["label"]).items()}}
