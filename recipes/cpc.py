#!/usr/bin/env python
"""CPC on raw audio or on video frames (mmssl.objectives.cpc).

    accelerate launch recipes/cpc.py --config recipes/configs/cpc_demo.yaml key=value ...
    accelerate launch recipes/cpc.py --config recipes/configs/cpc_video_demo.yaml

Keys: mmssl.train.TRAIN_DEFAULTS plus
  input            audio (waveform [B, samples]) | video (clips [B, T, C, H, W])
  audio.*          sample_rate, seconds, min_seconds of the waveform crops
  video.*          num_frames, stride, image_size of the clips
  encoder          g_enc: an audio encoder with a sequence (wave_encoder), or for video an image
                   encoder applied to every frame
  cpc.*            context_dim (the GRU), steps (K future steps predicted)
  probes           labelled sets for kNN / linear probes on the time-averaged context: a list of
                   {name, data, split, train_split}
After training, `encoder/` holds g_enc.
"""

from mmssl.cli import run_main
from mmssl.config import ConfigError, Key, constructor_keys, from_cli, set_defaults
from mmssl.data import AudioField, VideoField, training_loader
from mmssl.eval.av_tasks import audio_probes
from mmssl.eval.video_tasks import video_probes
from mmssl.models.encoders import build_encoder
from mmssl.objectives.cpc import CPC, FrameSequence
from mmssl.preflight import check_probe, check_training_data
from mmssl.train import TRAIN_DEFAULTS, fit, start

DEFAULTS = set_defaults(TRAIN_DEFAULTS, {
    "output_dir": "runs/cpc",
    "data": {"train": "shards/speech_speakers", "val": "", "shuffle_buffer": 500},
    "input": Key("audio", "audio: waveform [B, samples]; video: clips [B, T, C, H, W]", choices=("audio", "video")),
    "audio": {"sample_rate": Key(16000, "waveforms are resampled to this rate", min=1),
              "seconds": Key(1.0, "length of the training crops", above=0),
              "min_seconds": Key(0.1, "shorter sound is skipped (short_audio)", min=0),
              "trim_db": Key(40.0, "leading and trailing sound this far (dB) below the loudest 10 ms is cut "
                                   "before windows are drawn (steps past the sound are masked out)", above=0)},
    "video": {"num_frames": Key(16, "frames per clip", min=1), "stride": Key(1, "frames between frames", min=1),
              "image_size": Key(64, "side of the square frames", min=8)},
    # `config` is free-form: wave_encoder takes {dim}, a transformers model its own config keys.
    "encoder": Key({"name": "wave_encoder", "modality": "audio", "pretrained": False, "pooling": "pooler",
                    "freeze": False, "config": {}, "trust_remote_code": False},
                   "g_enc: an audio encoder with a sequence (wave_encoder), or an image encoder for video frames"),
    "cpc": {k: v for k, v in constructor_keys(CPC).items() if k != "key"},  # key: set by `input`
    "probes": Key([], "labelled sets probed (kNN, linear) on the time-averaged context: a list of "
                      "{name, data, split, train_split}"),
})


def input_field(cfg: dict, train: bool):
    if cfg["input"] == "audio":
        a = cfg["audio"]
        return AudioField(a["sample_rate"], a["seconds"], train=train, min_seconds=a["min_seconds"], trim_db=a["trim_db"])
    v = cfg["video"]
    return VideoField(v["num_frames"], v["stride"], v["image_size"], train=train)


def build_objective(cfg: dict) -> CPC:
    encoder = build_encoder(cfg["encoder"])
    if cfg["input"] == "video":
        encoder = FrameSequence(encoder)
    elif not hasattr(encoder, "sequence"):
        raise ValueError(f"encoder '{cfg['encoder']['name']}' gives no sequence for CPC; use wave_encoder")
    return CPC(encoder, key=cfg["input"], **cfg["cpc"])


def main(argv) -> int:
    cfg = from_cli(DEFAULTS, argv, title="recipes/cpc.py: every config key")
    check_training_data(cfg)
    for n, p in enumerate(cfg["probes"]):
        if not isinstance(p, dict) or set(p) != {"name", "data", "split", "train_split"}:
            raise ConfigError(f"probes[{n}] must be {{name, data, split, train_split}}, got {p!r}")
        check_probe(p["data"], p["split"], p["train_split"], f"probes[{n}].data")
    accelerator = start(cfg)
    loader = training_loader(cfg, [input_field(cfg, True)])
    objective = build_objective(cfg)

    def evaluate(model, step):
        device = next(model.parameters()).device

        def features(x, samples=None):
            return model.features(x.to(device), None if samples is None else samples.to(device))

        out = {}
        for p in cfg["probes"]:
            if cfg["input"] == "audio":
                res = audio_probes(features, p["data"], p["split"], input_field(cfg, False), p["train_split"])
                res = {k.removeprefix("audio_"): v for k, v in res.items()}
            else:
                v = cfg["video"]
                res = video_probes(features, p["data"], p["split"], p["train_split"], v["num_frames"], v["stride"],
                                   v["image_size"])
            out.update({f"{p['name']}_{k}": val for k, val in res.items()})
        return out

    fit(accelerator, cfg, objective, loader, evaluate if cfg["probes"] else None)
    return 0


if __name__ == "__main__":
    run_main(main)
