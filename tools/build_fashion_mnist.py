#!/usr/bin/env python
"""Build Fashion-MNIST shards from the Debian package dataset-fashion-mnist.

    python tools/build_fashion_mnist.py [--out shards/fashion_mnist] [--train-per-class 1000] [--test-per-class 1000]

The package ships the original IDX files (70,000 28x28 grayscale images in 10 classes). This
writes them as PNGs into an ImageNet-style tree, OUT/.raw/{train,test}/<class>/<n>.png (the first
N images of each class in the official order of each split), then runs

    tools/make_shards.py images OUT/.raw OUT --split-dirs

so the official test split stays the `test` split. `--train-per-class 6000 --test-per-class 1000`
takes everything. Running it again reuses finished shards; `--force` rebuilds them.
"""
from __future__ import annotations

import argparse
import gzip
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SOURCE = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"]
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format: big-endian dims after a 4-byte magic) -> uint8 array."""
    data = gzip.decompress(path.read_bytes())
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def stage(raw: Path, per_class: dict[str, int]) -> int:
    """Write the PNG tree; returns the number of images."""
    n = 0
    for split, (img_file, lbl_file) in FILES.items():
        for f in (img_file, lbl_file):
            if not (SOURCE / f).exists():
                sys.exit(f"build_fashion_mnist.py: error: {SOURCE / f} not found; install it with "
                         "`apt-get install -y dataset-fashion-mnist` (make demo does)")
        images, labels = read_idx(SOURCE / img_file), read_idx(SOURCE / lbl_file)
        for c, name in enumerate(CLASSES):
            folder = raw / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in np.flatnonzero(labels == c)[: per_class[split]]:
                Image.fromarray(images[i]).save(folder / f"{i:05d}.png")
                n += 1
    return n


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("shards/fashion_mnist"))
    p.add_argument("--train-per-class", type=int, default=1000)
    p.add_argument("--test-per-class", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--force", action="store_true")
    args = p.parse_args(argv)
    if (args.out / "manifest.json").exists() and not args.force:
        print(f"{args.out} exists (use --force to rebuild)")
        return 0
    raw = args.out / ".raw"
    shutil.rmtree(raw, ignore_errors=True)
    n = stage(raw, {"train": args.train_per_class, "test": args.test_per_class})
    print(f"staged {n} PNGs under {raw}")
    from mmssl.data.ingest import main as make_shards

    return make_shards(["images", str(raw), str(args.out), "--split-dirs", "--samples-per-shard", "2000",
                        "--workers", str(args.workers), "--overwrite"])


if __name__ == "__main__":
    sys.exit(main())
