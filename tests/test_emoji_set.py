"""tools/build_emoji_set.py: a labelled colour set from two Debian packages, split by item."""
from __future__ import annotations

import json
import sys
import tarfile
from collections import Counter

import numpy as np
from PIL import Image

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))

from build_emoji_set import emoji_items  # noqa: E402


def test_emoji_set_is_nine_colour_classes_split_by_item(emoji_shards):
    items = emoji_items()
    names = [n for _, n, _ in items]
    assert len(names) == len(set(names)) > 1800
    assert not any("skin tone" in n or n.endswith(("red hair", "curly hair", "white hair", "bald")) for n in names)
    out = emoji_shards  # tools/build_emoji_set.py at 32 px
    manifest = json.loads((out / "manifest.json").read_text())
    labels = manifest["labels"]
    assert sorted(labels) == sorted({"smileys_emotion", "people_body", "animals_nature", "food_drink", "travel_places",
                                     "activities", "objects", "symbols", "flags"})
    keys, counts, saturation = {}, Counter(), []
    for split in ("train", "test"):
        for shard in sorted(out.glob(f"{split}-*.tar")):
            with tarfile.open(shard) as tar:
                for m in tar.getmembers():
                    key, ext = m.name.split(".", 1)
                    keys.setdefault(split, set()).add(key)
                    if ext == "png" and len(saturation) < 400:
                        img = Image.open(tar.extractfile(m)).convert("HSV")
                        assert img.size == (32, 32)
                        saturation.append(np.asarray(img)[..., 1].mean())
                    if ext == "cls":
                        counts[int(tar.extractfile(m).read())] += 1
    assert not keys["train"] & keys["test"] and len(keys["train"]) + len(keys["test"]) >= len(items) - 5
    assert 0.15 < len(keys["test"]) / (len(keys["train"]) + len(keys["test"])) < 0.25
    assert len(counts) == 9 and min(counts.values()) > 50  # every group holds items
    assert np.median(saturation) > 40  # colour pictures, not grey ones
