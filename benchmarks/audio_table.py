#!/usr/bin/env python
"""The audio and audio-visual results table: CPC speech probes and AVC frame <-> sound retrieval.

    python benchmarks/audio_table.py [--steps 200] [--out runs/audio_table] [--force]

Builds the speech sets and the audio-visual set if needed (tools/build_speech_set.py,
tools/build_av_set.py).

CPC part, as the CPC paper's table: linear-probe (and kNN, k=20) top-1 on frozen features of the
held-out speech, for speaker identity (8 espeak-ng voices + the Asterisk speaker) and for the
spoken digit (10 words), of
  - MFCC: 20 coefficients, mean and standard deviation over time;
  - log-mel: 64 bands, mean and standard deviation over time;
  - CPC randomly initialised, and CPC after --cpc-steps steps of recipes/configs/cpc_demo.yaml
    (the GRU context averaged over time).
Every row sees the same windows (the CPC demo config's `audio.seconds`): the utterance with its leading and trailing silence trimmed
(40 dB), centred, and each statistic is taken over the steps that hold sound, not the padding.
AVC part: visual->audio and audio->visual R@1/R@5 on the held-out stamps' (frame, sound) pairs,
for L3-Net, AVID and sound-source localisation (AVOL) randomly initialised and after --steps steps
of recipes/configs/avc_demo.yaml; for AVOL also pointing accuracy on 2x2 grids of held-out stamps
(chance 25%).
Writes OUT/table.md, OUT/results.json and the record benchmarks/results/audio_table.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import torchaudio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "recipes"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from image_ssl_table import train  # noqa: E402
import docs_tables  # noqa: E402
from record import write_record  # noqa: E402

from mmssl.data import AudioField  # noqa: E402
from mmssl.eval.av_tasks import audio_probes, av_retrieval, pointing  # noqa: E402

# Data folders are relative to where it runs, like a recipe's data paths.
PROBES = {"speaker": "shards/speech_speakers", "digit": "shards/speech_digits"}
AV = "shards/av"


def time_stats(transform):
    """A spectral transform -> features(wave [B, samples], samples [B]) -> [B, 2C]: the mean and
    standard deviation over the frames of each window's sound."""
    def features(wave, samples):
        return torch.stack([torch.cat([x.mean(-1), x.std(-1)]) for x in
                            (transform(w[: max(int(n), 400)]) for w, n in zip(wave, samples))])
    return features


def speech_probes(features, audio: dict) -> dict:
    out = {}
    for task, data in PROBES.items():
        torch.manual_seed(0)
        field = AudioField(audio["sample_rate"], audio["seconds"], train=False, trim_db=audio["trim_db"])
        r = audio_probes(features, data, "val", field, "train")
        out[task] = {"knn": r["audio_knn_top1@20"], "linear": r["audio_linear_top1"]}
    return out


AV_KEYS = ("visual_to_audio_R@1", "visual_to_audio_R@5", "audio_to_visual_R@1", "audio_to_visual_R@5", "av_pairs",
           "av_chance_R@1", "pointing_acc", "pointing_chance", "pointing_trials")


def retrieval(model) -> dict:
    a = AudioField(16000, 1.0, train=False, n_mels=64)
    r = av_retrieval(model.pair_scores, AV, "test", 64, a)
    if hasattr(model, "heatmap"):
        r.update(pointing(model.heatmap, AV, "test", 64, a))
    return {k: r[k] for k in AV_KEYS if k in r}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=200, help="AVC training steps")
    p.add_argument("--cpc-steps", type=int, default=1000, help="CPC training steps (about 1 s each on 2 cores)")
    p.add_argument("--out", type=Path, default=Path("runs/audio_table"))
    p.add_argument("--force", action="store_true")
    args = p.parse_args(argv)
    subprocess.run([sys.executable, str(ROOT / "tools/build_speech_set.py")], check=True)
    subprocess.run([sys.executable, str(ROOT / "tools/build_av_set.py")], check=True)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    res = json.loads(path.read_text()) if path.exists() and not args.force else {}

    def save():
        path.write_text(json.dumps(res, indent=1))

    import avc
    import cpc
    from mmssl.config import from_cli

    def demo(module, name):
        return from_cli(module.DEFAULTS, ["--config", str(ROOT / "recipes/configs" / f"{name}_demo.yaml")])

    mfcc = torchaudio.transforms.MFCC(16000, n_mfcc=20, melkwargs={"n_fft": 400, "hop_length": 160, "n_mels": 64})
    mel = torchaudio.transforms.MelSpectrogram(16000, n_fft=400, hop_length=160, n_mels=64)
    torch.manual_seed(0)
    random_cpc = cpc.build_objective(demo(cpc, "cpc")).eval()
    baselines = {"MFCC (mean, std)": time_stats(mfcc), "log-mel (mean, std)": time_stats(lambda w: torch.log(mel(w) + 1e-6)),
                 "CPC, random init": random_cpc.features}
    with torch.no_grad():
        for name, fn in baselines.items():
            if name not in res:
                res[name] = speech_probes(fn, demo(cpc, "cpc")["audio"])
                save()
    if res.get("CPC", {}).get("steps") != args.cpc_steps:
        print(f"training CPC for {args.cpc_steps} steps ...", flush=True)
        run = train("cpc", args.cpc_steps, args.out)
        ev = run.pop("eval")
        res["CPC"] = {**{t: {"knn": ev[f"{t}_knn_top1@20"], "linear": ev[f"{t}_linear_top1"]} for t in PROBES},
                      "steps": args.cpc_steps, "loss": [run["first_loss"], run["last_loss"]], "minutes": run["minutes"]}
        save()
    for mode in ("l3", "avid", "avol"):
        name = f"AVC {mode}, random init"
        if name not in res:
            torch.manual_seed(0)
            cfg = demo(avc, "avc")
            model = avc.build_objective({**cfg, "avc": {**cfg["avc"], "mode": mode}}).eval()
            res[name] = retrieval(model)
            save()
        name = f"AVC {mode}"
        if res.get(name, {}).get("steps") != args.steps:
            print(f"training {name} for {args.steps} steps ...", flush=True)
            run = train(f"avc_{mode}", args.steps, args.out, "avc", (f"avc.mode={mode}",))
            ev = run.pop("eval")
            res[name] = {**{k: ev[k] for k in AV_KEYS if k in ev},
                         "speaker_linear": ev["audio_linear_top1"], "steps": args.steps,
                         "loss": [run["first_loss"], run["last_loss"]], "minutes": run["minutes"]}
            save()

    lines = ["Speech probes on held-out utterances (val split, 25%): top-1 accuracy, linear probe / kNN (k=20). "
             "Chance: speaker 1/9 = 11.1%, digit 1/10 = 10%.", "",
             "| features | speaker linear | speaker kNN | digit linear | digit kNN |", "|---|---|---|---|---|"]
    for name in list(baselines) + ["CPC"]:
        r, label = res[name], f"{name} ({args.cpc_steps} steps)" if name == "CPC" else name
        cells = [r[task][kind] for task in ("speaker", "digit") for kind in ("linear", "knn")]
        lines.append(f"| {label} | " + " | ".join(f"{100 * c:.1f}%" for c in cells) + " |")
    chance = res["AVC l3"]["av_chance_R@1"]
    lines += ["", f"Frame <-> sound retrieval on {res['AVC l3']['av_pairs']} held-out stamps (chance R@1 "
              f"{100 * chance:.1f}%, R@5 {500 * chance:.1f}%).", "",
              "| model | visual→audio R@1 | R@5 | audio→visual R@1 | R@5 | pointing (2x2, chance 25%) |",
              "|---|---|---|---|---|---|"]
    for name in ("AVC l3, random init", "AVC l3", "AVC avid, random init", "AVC avid", "AVC avol, random init",
                 "AVC avol"):
        r = res[name]
        lines.append(f"| {name}{f' ({args.steps} steps)' if 'random' not in name else ''} | "
                     f"{100 * r['visual_to_audio_R@1']:.1f}% | {100 * r['visual_to_audio_R@5']:.1f}% | "
                     f"{100 * r['audio_to_visual_R@1']:.1f}% | {100 * r['audio_to_visual_R@5']:.1f}% | "
                     + (f"{100 * r['pointing_acc']:.1f}% |" if "pointing_acc" in r else "– |"))
    table = "\n".join(lines)
    (args.out / "table.md").write_text(table + "\n")
    write_record(ROOT / "benchmarks/results/audio_table.json", results=res, table=table)
    docs_tables.main([])  # the docs' block of this record follows it
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
