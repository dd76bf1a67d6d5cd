#!/usr/bin/env python
"""Audio-visual correspondence on video shards with sound: L3-Net (mmssl.objectives.avc), AVID
(mmssl.objectives.avid) or sound-source localisation (mmssl.objectives.avol).

    accelerate launch recipes/avc.py --config recipes/configs/avc_demo.yaml key=value ...

Each training sample is one mp4: a random frame and the sound around its timestamp
(mmssl.data.av.AVPairField). Videos without an audio track, silent or too-short sound, and corrupt
files are skipped and counted in the loader statistics (`data/no_audio_track`, ...).

Keys: mmssl.train.TRAIN_DEFAULTS plus
  image_size, audio.*          frame size; sound window (sample_rate, seconds, n_mels, spec_augment)
  visual, audio_encoder        encoder specs (mmssl.models.encoders.build_encoder)
  avc.mode                     l3 | avid | avol
  avc.hidden_dim               width of L3's classifier / AVID's projection heads
  avc.hard_negatives           L3: share of negatives taken from the same video at another time
  avc.embed_dim, temperature   AVID, AVOL: joint space and InfoNCE temperature
  eval_split                   held-out videos for frame <-> sound retrieval R@1/5/10 (and, for
                               avol, pointing on grids of held-out frames: localisation/step_*.png)
  pointing_grid                avol: the pointing test tiles grid x grid held-out frames
  probe.data / split / train_split   a labelled audio set for kNN / linear probes of the audio tower
                               ('' skips them)
After training, `encoder/visual/` and `encoder/audio/` hold the two towers.
"""
from pathlib import Path

from mmssl.cli import run_main
from mmssl.config import Key, from_cli, set_defaults
from mmssl.data import AudioField, AVPairField, train_transform, training_loader
from mmssl.eval.av_tasks import audio_probes, av_retrieval, pointing
from mmssl.models.encoders import build_encoder, save_image_processor
from mmssl.objectives.avc import L3
from mmssl.objectives.avid import AVID
from mmssl.objectives.avol import AVOL
from mmssl.preflight import check_probe, check_source, check_training_data
from mmssl.recipe_image import SMALL_RESNET
from mmssl.train import TRAIN_DEFAULTS, fit, start

# `config` is free-form: logmel_cnn takes {widths}, an AST its transformers config keys.
LOGMEL_CNN = {"name": "logmel_cnn", "modality": "audio", "pretrained": False, "pooling": "mean", "freeze": False,
              "config": {}, "trust_remote_code": False}
DEFAULTS = set_defaults(TRAIN_DEFAULTS, {
    "output_dir": "runs/avc",
    "data": {"train": "shards/av", "val": "shards/av", "shuffle_buffer": 500},
    "image_size": Key(64, "side of the square frames", min=8),
    "audio": {"sample_rate": Key(16000, "sound is resampled to this rate", min=1),
              "seconds": Key(1.0, "sound window around the frame", above=0),
              "n_mels": Key(64, "log-mel bands", min=1),
              "spec_augment": Key(False, "SpecAugment masks on training log-mels"),
              "min_seconds": Key(0.1, "shorter sound is skipped (short_audio)", min=0)},
    "visual": Key(SMALL_RESNET, "visual encoder spec (mmssl.models.encoders.build_encoder)"),
    "audio_encoder": Key(LOGMEL_CNN, "audio encoder spec (mmssl.models.encoders.build_encoder)"),
    "avc": {"mode": Key("l3", "l3: L3-Net's match / no-match classifier; avid: AVID's cross-modal InfoNCE; "
                              "avol: sound-source localisation (a sound against every location of the frame)",
                        choices=("l3", "avid", "avol")),
            "embed_dim": Key(128, "AVID, AVOL: joint space width", min=1),
            "hidden_dim": Key(256, "width of L3's classifier / the projection heads", min=1),
            "temperature": Key(0.07, "AVID, AVOL: InfoNCE temperature", above=0),
            "hard_negatives": Key(0.0, "L3: share of negatives from the same video at another time", min=0)},
    "eval_split": Key("val", "held-out split of data.val for frame <-> sound retrieval R@1/5/10"),
    "pointing_grid": Key(2, "avol: held-out frames tiled grid x grid for the pointing test (chance 1/grid^2)", min=2),
    "probe": {"data": Key("", "a labelled audio set for kNN / linear probes of the audio tower ('' skips them)"),
              "split": Key("val", "probe split that is scored"),
              "train_split": Key("train", "probe split the kNN bank and the linear probe train on")},
})


def audio_field(cfg: dict, train: bool) -> AudioField:
    a = cfg["audio"]
    return AudioField(a["sample_rate"], a["seconds"], train=train, min_seconds=a["min_seconds"], n_mels=a["n_mels"],
                      spec_augment=a["spec_augment"] and train)


def build_objective(cfg: dict):
    a = cfg["avc"]
    visual, audio = build_encoder(cfg["visual"]), build_encoder(cfg["audio_encoder"])
    if a["mode"] == "l3":
        return L3(visual, audio, a["hidden_dim"], a["hard_negatives"])
    if a["mode"] == "avol":
        return AVOL(visual, audio, a["embed_dim"], a["hidden_dim"], a["temperature"])
    return AVID(visual, audio, a["embed_dim"], a["hidden_dim"], a["temperature"])


def main(argv) -> int:
    cfg = from_cli(DEFAULTS, argv, title="recipes/avc.py: every config key")
    check_training_data(cfg)
    if cfg["data"]["val"]:
        check_source(cfg["data"]["val"], cfg["eval_split"], "data.val")
    if cfg["probe"]["data"]:
        check_probe(cfg["probe"]["data"], cfg["probe"]["split"], cfg["probe"]["train_split"], "probe.data")
    accelerator = start(cfg)
    field = AVPairField(train_transform(cfg["image_size"], scale=(0.5, 1.0)), audio_field(cfg, True), train=True,
                        hard_negative=cfg["avc"]["hard_negatives"] > 0)
    loader = training_loader(cfg, [field])
    objective = build_objective(cfg)

    def evaluate(model, step):
        device = next(model.parameters()).device
        out = {}
        if cfg["data"]["val"]:
            out.update(av_retrieval(lambda i, m: model.pair_scores(i.to(device), m.to(device)), cfg["data"]["val"],
                                    cfg["eval_split"], cfg["image_size"], audio_field(cfg, False)))
            if cfg["avc"]["mode"] == "avol":
                out.update(pointing(lambda i, m: model.heatmap(i.to(device), m.to(device)), cfg["data"]["val"],
                                    cfg["eval_split"], cfg["image_size"], audio_field(cfg, False),
                                    cfg["pointing_grid"],
                                    overlays=Path(cfg["output_dir"]) / "localisation" / f"step_{step:07d}.png"))
        if cfg["probe"]["data"]:
            p = cfg["probe"]
            out.update(audio_probes(lambda m, _: model.audio(m.to(device)), p["data"], p["split"], audio_field(cfg, False),
                                    p["train_split"]))
        return out

    fit(accelerator, cfg, objective, loader, evaluate,
        preprocessors={"visual": lambda d: save_image_processor(d, cfg["image_size"])})
    return 0


if __name__ == "__main__":
    run_main(main)
