#!/usr/bin/env python
"""Build a labelled colour image set from packaged data: the Noto colour emoji, classed by their
Unicode emoji group.

    python tools/build_emoji_set.py [--out shards/emoji] [--size 64] [--test-fraction 0.2]

Sources, both Debian packages (`make emoji-set` installs them): the glyphs are the bitmaps of
`fonts-noto-color-emoji` (/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf), the classes the
groups of Unicode's `emoji-test.txt` (`unicode-data`, /usr/share/unicode/emoji/): Smileys &
Emotion, People & Body, Animals & Nature, Food & Drink, Travel & Places, Activities, Objects,
Symbols, Flags. Fashion-MNIST is greyscale, so colourisation cannot be judged on it; these are
colour drawings with a label each.

Each fully-qualified emoji is one item, rendered once on white and centred in a square of `--size`
pixels. Skin-tone and hair variants (a base emoji with a Component modifier) and the Component
group itself are left out: a variant differs from its base only in colour, and across the split it
would put the same drawing on both sides. Items are split into train and test by a hash of their
name, written to OUT/../.raw/emoji/{train,test}/<group>/<name>.png and sharded by
`make_shards.py images --split-dirs`, the way users shard their own labelled folders.
"""
from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
MODIFIERS = {0x1F3FB, 0x1F3FC, 0x1F3FD, 0x1F3FE, 0x1F3FF, 0x1F9B0, 0x1F9B1, 0x1F9B2, 0x1F9B3}  # skin tones, hair
LINE = re.compile(r"^([0-9A-F ]+?)\s*; fully-qualified\s*# \S+ E[\d.]+ (.+)$")


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def emoji_items(path: Path = EMOJI_TEST) -> list[tuple[str, str, str]]:
    """(group, name, characters) of each fully-qualified emoji without a Component modifier."""
    items, group = [], None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
            continue
        m = LINE.match(line)
        if not m or group in (None, "Component"):
            continue
        codes = [int(c, 16) for c in m.group(1).split()]
        if MODIFIERS & set(codes):
            continue
        items.append((group, m.group(2).strip(), "".join(map(chr, codes))))
    return items


def split_of(name: str, test_fraction: float) -> str:
    h = int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if h < test_fraction else "train"


def render(chars: str, size: int, font):
    """The emoji drawn on white, its bounding box centred in a `size` square (None if the font has
    no glyph for it: nothing drawn)."""
    from PIL import Image, ImageDraw

    canvas = Image.new("RGBA", (160, 160), (255, 255, 255, 0))
    ImageDraw.Draw(canvas).text((8, 8), chars, font=font, embedded_color=True)
    box = canvas.getbbox()
    if box is None:
        return None
    glyph = canvas.crop(box)
    side = max(glyph.size)
    square = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    square.alpha_composite(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2))
    return square.convert("RGB").resize((size, size), Image.LANCZOS)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="shards/emoji")
    p.add_argument("--size", type=int, default=64, help="image side in pixels")
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--workers", type=int, default=2, help="make_shards workers")
    p.add_argument("--force", action="store_true", help="rebuild the shards even if OUT/manifest.json exists")
    args = p.parse_args(argv)
    for path, package in ((FONT, "fonts-noto-color-emoji"), (EMOJI_TEST, "unicode-data")):
        if not path.exists():
            print(f"build_emoji_set.py: error: {path} is missing; install the Debian package {package} "
                  "(make emoji-set does)", file=sys.stderr)
            return 2
    out = Path(args.out)
    if (out / "manifest.json").exists() and not args.force:
        print(f"{out} exists (pass --force to rebuild)")
        return 0
    from PIL import ImageFont
    from tqdm import tqdm

    from mmssl.data.ingest import main as make_shards

    font = ImageFont.truetype(str(FONT), 109)  # the one size the bitmap font holds
    raw = out.parent / ".raw" / out.name
    missing = 0
    for group, name, chars in tqdm(emoji_items(), desc="rendering emoji", unit="emoji", file=sys.stderr):
        path = raw / split_of(name, args.test_fraction) / slug(group) / f"{slug(name)}.png"
        if path.exists():
            continue
        img = render(chars, args.size, font)
        if img is None:
            missing += 1
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path)
    if missing:
        print(f"left out, no glyph in {FONT.name}: {missing} emoji", file=sys.stderr)
    return make_shards(["images", str(raw), str(out), "--split-dirs", "--workers", str(args.workers), "--overwrite"])


if __name__ == "__main__":
    sys.exit(main())
