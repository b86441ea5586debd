"""A folder of corrupted images in CIFAR-10-C's layout (``--data npyc:DIR``), read and checked.

The layout of CIFAR-10-C, CIFAR-100-C and Tiny-ImageNet-C as ``.npy`` files: ``DIR/<type>.npy``
holds N*5 uint8 images (N x H x W x C, or N x H x W), the N test images at severity 1, then the
same N at severity 2, ... 5; ``DIR/labels.npy`` holds their labels, N*5 (repeated for each
severity) or N. An optional ``DIR/clean.npy`` of the N images uncorrupted gives the clean accuracy.
Files of other types (CIFAR-10-C's extra ``speckle_noise``, ``spatter``, ...) are left aside.
Files are memory-mapped and read with ``allow_pickle=False``; a file that is not what it should be
is one :class:`UsageError` naming it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harden.errors import UsageError

PREFIX = "npyc:"
LAYOUT = ("a CIFAR-10-C folder holds <type>.npy, N*5 uint8 images (N x H x W x C) by severity 1-5, and "
          "labels.npy (N*5 or N labels)")


@dataclass
class CorruptionFolder:
    """The images of a CIFAR-10-C style folder: per type, N*5 images; N labels; the clean images if given."""

    root: Path
    arrays: dict[str, np.ndarray]          # type -> (5N, H, W[, C]) uint8, memory-mapped
    labels: np.ndarray                     # (N,) int64
    clean: np.ndarray | None = None        # (N, H, W[, C]) uint8
    ignored: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.labels)

    def images(self, name: str, severity: int, indices: list[int]) -> np.ndarray:
        """The images of type ``name`` at ``severity`` (1-5) at ``indices``, as (k, H, W, C) uint8."""
        block = self.arrays[name]
        picked = np.asarray(block[[(severity - 1) * self.n + i for i in indices]])
        return picked[..., None] if picked.ndim == 3 else picked


def folder_root(data: object) -> Path | None:
    """The folder ``data`` names: ``npyc:DIR``, or a plain folder path holding ``labels.npy``; else None."""
    if not isinstance(data, (str, Path)):
        return None
    text = str(data)
    if text.startswith(PREFIX):
        return Path(text[len(PREFIX):])
    path = Path(text)
    return path if ":" not in text and (path / "labels.npy").is_file() else None


def _load(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"'{path}' is not a readable .npy array ({reason}); {LAYOUT}") from None


def _labels(root: Path) -> np.ndarray:
    path = root / "labels.npy"
    if not path.is_file():
        raise UsageError(f"'{root}' has no labels.npy; {LAYOUT}")
    labels = _load(path)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or len(labels) == 0:
        raise UsageError(f"'{path}' holds {labels.dtype} {tuple(labels.shape)}; labels.npy must be N*5 or N "
                         "integer labels")
    return np.asarray(labels, dtype=np.int64)


def _check_images(path: Path, array: np.ndarray, count: int | None) -> None:
    """Refuse an array that is not ``count`` uint8 images (k x H x W, or k x H x W x 1|3)."""
    ok = array.dtype == np.uint8 and (array.ndim == 3 or (array.ndim == 4 and array.shape[3] in (1, 3)))
    if not ok or (count is not None and len(array) != count):
        want = f"{count} " if count is not None else ""
        raise UsageError(f"'{path}' holds {array.dtype} {'x'.join(map(str, array.shape))}; expected {want}uint8 "
                         f"images (N x H x W x C, C 1 or 3); {LAYOUT}")


def _per_image_labels(root: Path, labels: np.ndarray, total: int) -> np.ndarray:
    """The N labels from ``labels.npy`` given ``total`` = 5N images per type (N*5 labels must repeat)."""
    n = total // 5
    if len(labels) == n:
        return labels
    if len(labels) != total:
        raise UsageError(f"'{root / 'labels.npy'}' holds {len(labels)} labels but each type holds {total} images "
                         f"(N*5); {LAYOUT}")
    blocks = labels.reshape(5, n)
    if not (blocks == blocks[0]).all():
        raise UsageError(f"'{root / 'labels.npy'}' gives other labels at different severities; {LAYOUT}")
    return blocks[0].copy()


def read_folder(root: Path, names: tuple[str, ...], *, explicit: bool) -> CorruptionFolder:
    """The folder's arrays of the types ``names`` (all present of the 15 unless ``explicit``), checked."""
    from harden.evaluation.corruptions import CORRUPTIONS

    if not root.is_dir():
        raise UsageError(f"corruption folder '{root}' does not exist or is not a directory")
    labels = _labels(root)
    present = {p.stem for p in root.glob("*.npy")}
    missing = [n for n in names if n not in present]
    if explicit and missing:
        raise UsageError(f"'{root}' has no {missing[0]}.npy (it has: {', '.join(sorted(present & set(CORRUPTIONS)))})")
    chosen = tuple(n for n in names if n in present)
    if not chosen:
        raise UsageError(f"'{root}' holds none of the 15 corruption types' files ({CORRUPTIONS[0]}.npy, ...); {LAYOUT}")
    arrays: dict[str, np.ndarray] = {}
    for name in chosen:
        path = root / f"{name}.npy"
        arrays[name] = array = _load(path)
        _check_images(path, array, None)
        if len(array) % 5:
            raise UsageError(f"'{path}' holds {len(array)} images, not a multiple of 5 (N*5 by severity); {LAYOUT}")
        first = arrays[chosen[0]]
        if array.shape != first.shape:
            raise UsageError(f"'{path}' holds {'x'.join(map(str, array.shape))} images but "
                             f"'{root / (chosen[0] + '.npy')}' {'x'.join(map(str, first.shape))}; every type holds "
                             "the same images")
    per_image = _per_image_labels(root, labels, len(arrays[chosen[0]]))
    clean = None
    if (root / "clean.npy").is_file():
        clean = _load(root / "clean.npy")
        _check_images(root / "clean.npy", clean, len(per_image))
        if clean.shape[1:] != arrays[chosen[0]].shape[1:]:
            raise UsageError(f"'{root / 'clean.npy'}' holds {'x'.join(map(str, clean.shape[1:]))} images but the "
                             f"corrupted ones are {'x'.join(map(str, arrays[chosen[0]].shape[1:]))}")
    ignored = sorted(present - set(chosen) - {"labels", "clean"})
    return CorruptionFolder(root, arrays, per_image, clean, ignored)
