"""Image arrays from files: the IDX format of MNIST-like sets (``idx:DIR``) and numpy ``.npz`` files
(``npz:FILE``). Each reader checks what it reads and returns uint8 images (N, C, H, W), labels and
class names; a file that is not what it should be is one :class:`UsageError` naming it.

IDX (MNIST, Fashion-MNIST, KMNIST, EMNIST): ``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte``
for the train split, ``t10k-...`` (or ``test-...``) for the test split, each optionally ``.gz``; a
prefix such as ``emnist-letters-`` is allowed. Class names come from ``classes.txt`` (one per line)
when the folder has one, else they are the label numbers ``"0"``, ``"1"``, ...

npz: ``x`` (uint8 images (N, H, W, C), (N, C, H, W) or (N, H, W)) and ``y`` (integer labels), read
by every split, or per split ``x_train``/``y_train``, ``x_test``/``y_test`` (Keras's ``mnist.npz``),
and optionally ``classes`` (strings). Read with ``allow_pickle=False``: a data file is data, never code.
"""

from __future__ import annotations

import gzip
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harden.errors import UsageError

IDX_SPLITS = {"train": ("train",), "test": ("t10k", "test")}
_CHANNELS = (1, 3, 4)


@dataclass
class Arrays:
    """Images (uint8, N x C x H x W), labels and class names read from a file; ``flat``: one set for every split."""

    x: torch.Tensor
    labels: list[int]
    classes: list[str]
    flat: bool = False


def _idx_file(base: Path, split: str, kind: str) -> Path | None:
    """The IDX file of ``kind`` (``images`` or ``labels``) for ``split`` in ``base``, or None."""
    ndim = 3 if kind == "images" else 1
    stems = [f"{prefix}-{kind}{sep}idx{ndim}-ubyte" for prefix in IDX_SPLITS[split] for sep in ("-", ".")]
    names = {p: p.name.removesuffix(".gz") for p in sorted(base.iterdir()) if p.is_file()}
    found = [p for p, name in names.items() if any(name == stem or name.endswith(f"-{stem}") for stem in stems)]
    if not found:
        return None
    distinct = {names[p] for p in found}
    if len(distinct) > 1:
        raise UsageError(f"'{base}' holds several {split} {kind} files ({', '.join(sorted(distinct))}); keep one "
                         "data set per folder")
    raw = [p for p in found if not p.name.endswith(".gz")]
    return raw[0] if raw else found[0]


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """The uint8 array of an IDX file (gzip or not), its magic number and sizes checked."""
    try:
        data = path.read_bytes()
        if path.name.endswith(".gz"):
            data = gzip.decompress(data)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise UsageError(f"cannot read '{path}' ({str(exc) or type(exc).__name__}); download it again") from None
    what = "images (N x H x W)" if ndim == 3 else "labels (N)"
    if len(data) < 4 + 4 * ndim or data[0] != 0 or data[1] != 0:
        raise UsageError(f"'{path}' is not an IDX file (its magic number is 0x{data[:4].hex()}, expected "
                         f"0x0000080{ndim} for {what})")
    if data[2] != 0x08 or data[3] != ndim:
        raise UsageError(f"'{path}' holds IDX type 0x{data[2]:02x} with {data[3]} dimensions; expected unsigned "
                         f"bytes (0x08) with {ndim}: {what}")
    dims = struct.unpack(f">{ndim}I", data[4: 4 + 4 * ndim])
    header, size = 4 + 4 * ndim, int(np.prod(dims))
    if len(data) - header != size:
        raise UsageError(f"'{path}' holds {len(data) - header} bytes of data but its header announces {size} "
                         f"({' x '.join(map(str, dims))}); the file is truncated or damaged: download it again")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _class_names(base: Path, count: int, where: str) -> list[str]:
    """``classes.txt`` beside the data (one name per line), else ``"0"`` .. ``str(count - 1)``."""
    listing = base / "classes.txt"
    if not listing.is_file():
        return [str(i) for i in range(count)]
    names = [line.strip() for line in listing.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(names) < count:
        raise UsageError(f"'{listing}' names {len(names)} classes but the labels of {where} go up to {count - 1}; "
                         "give one name per class, in label order")
    return names


def read_idx_dir(root: str, split: str) -> Arrays:
    """The images and labels of ``split`` (train or test) in an IDX folder."""
    base = Path(root)
    images, labels = _idx_file(base, split, "images"), _idx_file(base, split, "labels")
    if images is None or labels is None:
        present = [s for s in IDX_SPLITS if _idx_file(base, s, "images") is not None]
        missing = f"{IDX_SPLITS[split][0]}-{'images-idx3' if images is None else 'labels-idx1'}-ubyte[.gz]"
        has = f"it has: {', '.join(present)}" if present else "it holds no IDX images"
        raise UsageError(f"'{root}' has no {split} split (no {missing}; {has})")
    x, y = read_idx(images, 3), read_idx(labels, 1)
    if len(x) != len(y):
        raise UsageError(f"'{images}' holds {len(x)} images but '{labels}' {len(y)} labels; the files do not belong "
                         "together")
    label_files = [f for s in IDX_SPLITS if (f := _idx_file(base, s, "labels")) is not None]
    count = 1 + max(int(read_idx(f, 1).max(initial=0)) for f in label_files)
    return Arrays(torch.from_numpy(x.copy())[:, None], y.astype(np.int64).tolist(),
                  _class_names(base, count, f"'{root}'"))


def _layout(x: np.ndarray, key: str, path: str) -> np.ndarray:
    """uint8 images of any accepted layout as (N, C, H, W)."""
    if x.dtype != np.uint8:
        raise UsageError(f"'{key}' in '{path}' is {x.dtype}; harden reads uint8 images (0-255): save them as "
                         "np.uint8, e.g. (x * 255).round().astype(np.uint8)")
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4:  # the channel axis holds 1 or 3 entries (else 4); (N, H, W, C) when both axes could
        for counts in ((1, 3), _CHANNELS):
            if x.shape[-1] in counts:
                return x.transpose(0, 3, 1, 2)
            if x.shape[1] in counts:
                return x
    raise UsageError(f"'{key}' in '{path}' has shape {x.shape}; expected images (N, H, W, C), (N, C, H, W) or "
                     "(N, H, W) with C 1 or 3")


def _labels(y: np.ndarray, key: str, n: int, path: str) -> np.ndarray:
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
        raise UsageError(f"'{key}' in '{path}' must be integer labels of shape (N,), got {y.dtype} {y.shape}")
    if len(y) != n:
        raise UsageError(f"'{path}' holds {n} images but {len(y)} labels in '{key}'")
    if len(y) and int(y.min()) < 0:
        raise UsageError(f"'{key}' in '{path}' holds negative labels; labels are 0 .. classes - 1")
    return y.astype(np.int64)


def _npz_keys(keys: list[str], split: str, path: str) -> tuple[str, str, bool]:
    """The image and label arrays ``split`` reads, and whether they are one set for every split."""
    if f"x_{split}" in keys and f"y_{split}" in keys:
        return f"x_{split}", f"y_{split}", False
    per_split = sorted(k[2:] for k in keys if k.startswith("x_") and f"y_{k[2:]}" in keys)
    if per_split:
        raise UsageError(f"'{path}' has no {split} split (it has: {', '.join(per_split)}); pick one with --split")
    if "x" not in keys or "y" not in keys:
        raise UsageError(f"'{path}' has no 'x' and 'y' arrays (it has: {', '.join(keys) or 'none'}); an npz data file "
                         "holds x (uint8 images) and y (labels), or x_train/y_train and x_test/y_test")
    return "x", "y", True


def read_npz(path: str, split: str) -> Arrays:
    """The images and labels of ``split`` in an npz file (``x``/``y`` for every split, or ``x_SPLIT``/``y_SPLIT``)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            xk, yk, flat = _npz_keys(list(f.files), split, path)
            x, y = _layout(f[xk], xk, path), _labels(f[yk], yk, len(f[xk]), path)
            label_keys = [k for k in f.files if k == "y" or k.startswith("y_")]
            count = 1 + max(int(f[k].max(initial=0)) for k in label_keys)
            classes = f["classes"] if "classes" in f.files else None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise UsageError(f"cannot read '{path}' as an .npz file ({str(exc).splitlines()[0] if str(exc) else exc!r})"
                         "; write it with numpy.savez") from None
    except ValueError as exc:  # an object array (pickled): refused, never unpickled
        raise UsageError(f"'{path}' holds an object array ({str(exc).splitlines()[0]}); store x as uint8, y as "
                         "integers and classes as strings") from None
    if classes is None:
        names = [str(i) for i in range(count)]
    elif classes.dtype.kind not in "US" or classes.ndim != 1 or len(classes) < count:
        raise UsageError(f"'classes' in '{path}' must be {count} or more strings (one per label, in label order), got "
                         f"{classes.dtype} {classes.shape}")
    else:
        names = [c.decode() if isinstance(c, bytes) else str(c) for c in classes.tolist()]
    return Arrays(torch.from_numpy(np.ascontiguousarray(x)), y.tolist(), names, flat)
