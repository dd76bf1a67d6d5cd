"""Audio-visual evaluation: frame <-> sound retrieval on held-out pairs, and probes of sound embeddings."""
from __future__ import annotations

from pathlib import Path

import torch

from ..data import AudioField, AVPairField, LabelField, build_loader, eval_transform
from .features import extract
from .knn import knn_accuracy
from .linear_probe import linear_probe
from .retrieval import recall_from_scores


def held_out_pairs(data: str, split: str, image_size: int, audio: AudioField,
                   batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Each held-out video's middle frame [N, 3, S, S] and the sound around it [N, ...], in order."""
    field = AVPairField(eval_transform(image_size), audio, train=False)
    loader = build_loader(data, [field], batch_size, split=split, shuffle=False, drop_last=False, num_workers=0,
                          rank=0, world_size=1)
    images, sounds = [], []
    for batch in loader:
        images.append(batch["image"])
        sounds.append(batch[audio.out_key])
    if not images:
        raise ValueError(f"{data} split '{split}' delivered no audio-visual pairs")
    return torch.cat(images), torch.cat(sounds)


@torch.no_grad()
def av_retrieval(pair_scores, data: str, split: str, image_size: int, audio: AudioField, batch_size: int = 64) -> dict:
    """pair_scores(image [N,3,S,S], mel [M,...]) -> [N, M]. Each held-out video gives its middle frame
    and the sound around it; -> visual_to_audio_R@k and audio_to_visual_R@k (k = 1, 5, 10), chance R@1."""
    scores = pair_scores(*held_out_pairs(data, split, image_size, audio, batch_size))
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


@torch.no_grad()
def pointing(heatmap, data: str, split: str, image_size: int, audio: AudioField, grid: int = 2, repeats: int = 3,
             overlays: Path | None = None, seed: int = 0) -> dict:
    """Sound-source localisation where the answer is known. heatmap(image [1, 3, H, W], sound [1, ...])
    -> [1, h, w]. Each trial tiles grid x grid distinct held-out frames into one picture and plays the
    sound of one of them (every held-out video is the sounding one `repeats` times, at a random cell);
    a hit is the heat map's peak inside that frame's cell. -> pointing_acc, pointing_chance (1 /
    grid^2), pointing_trials; with `overlays`, the first 8 trials are drawn there as one PNG (the
    heat map over the picture, the sounding cell outlined)."""
    images, sounds = held_out_pairs(data, split, image_size, audio)
    n, cells = images.shape[0], grid * grid
    if n < cells:
        raise ValueError(f"{data} split '{split}' has {n} audio-visual pairs; pointing on a {grid}x{grid} grid needs "
                         f"at least {cells}")
    g = torch.Generator().manual_seed(seed)
    hits, drawn = [], []
    for target in [i for _ in range(repeats) for i in range(n)]:
        others = [int(j) for j in torch.randperm(n, generator=g) if j != target][: cells - 1]
        cell = int(torch.randint(cells, (), generator=g))
        order = others[:cell] + [target] + others[cell:]
        tiles = images[order].view(grid, grid, 3, image_size, image_size)
        picture = tiles.permute(2, 0, 3, 1, 4).reshape(1, 3, grid * image_size, grid * image_size)
        heat = heatmap(picture, sounds[target : target + 1])[0].float().cpu()
        h, w = heat.shape
        y, x = divmod(int(heat.argmax()), w)
        hits.append((y * grid // h) * grid + (x * grid // w) == cell)
        if overlays is not None and len(drawn) < 8:
            drawn.append((picture[0], heat, cell))
    if overlays is not None:
        draw_overlays(drawn, grid, Path(overlays))
    return {"pointing_acc": sum(hits) / len(hits), "pointing_chance": 1 / cells, "pointing_trials": len(hits)}


def draw_overlays(drawn: list, grid: int, path: Path) -> None:
    """One PNG: each picture with its heat map blended in red and the sounding cell outlined in green."""
    from PIL import Image, ImageDraw

    from ..data.image import tensor_to_pil

    size = drawn[0][0].shape[-1]
    sheet = Image.new("RGB", (len(drawn) * (size + 4), size), (255, 255, 255))
    for k, (picture, heat, cell) in enumerate(drawn):
        img = tensor_to_pil(picture)
        heat = (heat - heat.min()) / (heat.max() - heat.min()).clamp(min=1e-6)
        mask = Image.fromarray(heat.mul(255).byte().numpy()).resize(img.size, Image.BILINEAR)
        red = Image.new("RGB", img.size, (255, 0, 0))
        img = Image.composite(red, img, mask.point(lambda v: v * 0.6))
        step = size // grid
        x0, y0 = (cell % grid) * step, (cell // grid) * step
        ImageDraw.Draw(img).rectangle([x0, y0, x0 + step - 1, y0 + step - 1], outline=(0, 200, 0), width=2)
        sheet.paste(img, (k * (size + 4), 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
