"""Rebuild harden's bundled Fashion-MNIST sample: the first 2,000 training and 500 test images, IDX gzip.

    python scripts/make_fmnist_sample.py ../shared/data/fashion-mnist

The images are taken in file order (the set is shuffled, so every class appears about evenly) and
written byte for byte as IDX files, with the class names in classes.txt.
"""

from __future__ import annotations

import gzip
import struct
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "harden" / "_sample" / "fashion-mnist"
COUNTS = {"train": 2000, "t10k": 500}
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def cut(source: Path, name: str, n: int) -> None:
    """The first ``n`` records of one IDX file (header sizes rewritten), gzipped with a fixed mtime."""
    data = gzip.decompress(source.read_bytes())
    ndim = data[3]
    dims = list(struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim]))
    record = 1
    for d in dims[1:]:
        record *= d
    body = data[4 + 4 * ndim: 4 + 4 * ndim + n * record]
    blob = data[:4] + struct.pack(f">{ndim}I", n, *dims[1:]) + body
    (OUT / name).write_bytes(gzip.compress(blob, mtime=0))


def main(root: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for split, n in COUNTS.items():
        for kind in ("images-idx3", "labels-idx1"):
            name = f"{split}-{kind}-ubyte.gz"
            cut(Path(root) / name, name, n)
    (OUT / "classes.txt").write_text("\n".join(CLASSES) + "\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/fashion-mnist")
