"""Build the bundled CIFAR-10 sample (harden/_sample/cifar10-sample.tar.gz) from the JPEG copy.

    python scripts/make_sample.py ../shared/data/cifar10-jpeg

Takes the first 200 training and 100 test images of each class (file-name order), keeping the
original JPEG bytes, so the sample is a few hundred KB per thousand images.
"""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

PER_CLASS = {"train": 200, "test": 100}


def main(src: str) -> None:
    out = Path(__file__).resolve().parents[1] / "harden" / "_sample" / "cifar10-sample.tar.gz"
    members: dict[str, list[tuple[str, bytes]]] = {}
    for split, per_class in PER_CLASS.items():
        with tarfile.open(Path(src) / f"{split}.tar.gz") as tar:
            by_class: dict[str, list[tarfile.TarInfo]] = {}
            for info in tar.getmembers():
                parts = Path(info.name).parts
                if info.isfile() and len(parts) == 3 and parts[2].endswith(".jpg"):
                    by_class.setdefault(parts[1], []).append(info)
            for cls in sorted(by_class):
                chosen = sorted(by_class[cls], key=lambda i: i.name)[:per_class]
                members.setdefault(split, []).extend(
                    (i.name, tar.extractfile(i).read()) for i in chosen)  # type: ignore[union-attr]
    with tarfile.open(out, "w:gz") as tar:
        for split in PER_CLASS:
            for name, data in members[split]:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mtime = 0
                tar.addfile(info, io.BytesIO(data))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/cifar10-jpeg")
