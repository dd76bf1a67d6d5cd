#!/usr/bin/env python
"""Build the labelled speech sets: who speaks (9 speakers) and which digit is spoken (10 words).

    python tools/build_speech_set.py [--out shards] [--speeds 130,165,200]

Speech comes from two real sources that install offline: espeak-ng (8 voices: accents x voice
variants, each saying the digits zero..nine and the letters a..z at several speeds) and the
Asterisk prompts of one human speaker (Debian asterisk-core-sounds-en-wav: digits/0..9.wav and
letters/a..z.wav, 8 kHz). The same recordings are sharded twice with `make_shards.py audio`:
OUT/speech_speakers (label = speaker) and OUT/speech_digits (digits only, label = word). Both
hold out the same 25% (by a hash of the path) as `val`.
"""
from __future__ import annotations

import argparse
import csv
import shutil
import string
import subprocess
import sys
from pathlib import Path

from tqdm import tqdm

ASTERISK = Path("/usr/share/asterisk/sounds/en")
VOICES = ["en-us+m1", "en-us+f2", "en-gb+m3", "en-gb+f4", "en-gb-scotland+m2", "en-gb-x-rp+f1", "en-029+m4",
          "en-us-nyc+f3"]
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
LETTERS = list(string.ascii_lowercase)


def say(voice: str, text: str, speed: int, out: Path) -> None:
    if not out.exists():
        tmp = out.with_suffix(".part.wav")
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(tmp), text], check=True,
                       capture_output=True)
        tmp.rename(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="shards")
    p.add_argument("--speeds", default="130,165,200", help="espeak-ng words per minute, one recording each")
    p.add_argument("--force", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    targets = [out / "speech_speakers", out / "speech_digits"]
    if all((t / "manifest.json").exists() for t in targets) and not args.force:
        print(f"{targets[0]} and {targets[1]} exist (pass --force to rebuild)")
        return 0
    if shutil.which("espeak-ng") is None or not (ASTERISK / "digits").is_dir():
        sys.exit("build_speech_set.py: needs the Debian packages espeak-ng and asterisk-core-sounds-en-wav")
    raw = out / ".raw" / "speech"
    speeds = [int(s) for s in args.speeds.split(",")]
    rows = []  # (path relative to raw, speaker, word)
    jobs = [(v, w, s) for v in VOICES for w in DIGITS + LETTERS for s in speeds]
    for voice, word, speed in tqdm(jobs, desc="espeak-ng", unit="utterance", file=sys.stderr):
        rel = Path(voice.replace("+", "_")) / f"{word}_{speed}.wav"
        (raw / rel.parent).mkdir(parents=True, exist_ok=True)
        say(voice, word, speed, raw / rel)
        rows.append((rel.as_posix(), voice, word))
    for i, word in enumerate(DIGITS):
        rows.append((str(ASTERISK / "digits" / f"{i}.wav"), "asterisk", word))
    for letter in LETTERS:
        rows.append((str(ASTERISK / "letters" / f"{letter}.wav"), "asterisk", letter))
    tables = {"speech_speakers": [(path, spk) for path, spk, _ in rows],
              "speech_digits": [(path, word) for path, _, word in rows if word in DIGITS]}
    for name, table in tables.items():
        csv_path = raw / f"{name}.csv"
        with open(csv_path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label"])
            w.writerows(table)
        from mmssl.data.ingest import main as make_shards

        if make_shards(["audio", str(csv_path), str(out / name), "--val-fraction", "0.25", "--samples-per-shard", "500",
                        "--workers", "2", "--overwrite"]) != 0:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
