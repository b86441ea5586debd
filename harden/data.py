"""Data sources: turning a data spec into images in [0, 1] and labels.

Specs: ``sample`` (a CIFAR-10 sample bundled with harden), ``imagefolder:ROOT`` (an ImageFolder
tree, optionally with ``train/`` and ``test/`` splits), ``cifar10:ROOT`` and ``cifar100:ROOT``
(torchvision's format; downloaded only when asked).
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from harden.errors import HardenError, UsageError, close_matches

SPLITS = ("train", "test")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _to_tensor(img: Image.Image, size: int | None) -> torch.Tensor:
    img = img.convert("RGB")
    if size is not None and img.size != (size, size):
        # resize the short side, then centre-crop to a square
        w, h = img.size
        scale = size / min(w, h)
        img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
        w, h = img.size
        left, top = (w - size) // 2, (h - size) // 2
        img = img.crop((left, top, left + size, top + size))
    arr = np.asarray(img, dtype=np.uint8).copy()
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)


class DamagedImage(UsageError):
    """An image file that cannot be decoded (truncated, corrupt or not an image)."""


_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


class ImageDataset(Dataset):
    """Images in [0, 1] (C, H, W float tensors) with integer labels and class names."""

    def __init__(self, spec: str, split: str, classes: Sequence[str], items: Sequence[Any],
                 loader: Callable[[Any], Image.Image | torch.Tensor], labels: Sequence[int],
                 image_size: int | None = None) -> None:
        self.spec = spec
        self.split = split
        self.classes = list(classes)
        self._items = list(items)
        self._loader = loader
        self.labels = [int(v) for v in labels]
        self.image_size = image_size

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self._items)

    def item_name(self, index: int) -> str:
        """The file (or entry) behind example ``index``, for messages."""
        return str(self._items[index])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        try:
            x = self._as_tensor(self._loader(self._items[index]))
        except _DECODE_ERRORS as exc:
            reason = str(exc).splitlines()[0][:100] if str(exc) else type(exc).__name__
            raise DamagedImage(f"cannot read image '{self.item_name(index)}' ({reason}); repair or remove it, "
                               "or pass --skip-bad-images to go on without it") from exc
        return x, self.labels[index]

    def _as_tensor(self, item: Image.Image | torch.Tensor) -> torch.Tensor:
        if isinstance(item, Image.Image):
            with item:
                return _to_tensor(item, self.image_size)
        if self.image_size is not None and item.shape[-1] != self.image_size:
            item = torch.nn.functional.interpolate(item[None], size=(self.image_size, self.image_size),
                                                   mode="bilinear", align_corners=False)[0]
        return item

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec, "split": self.split, "size": len(self), "num_classes": self.num_classes}

    def readable(self, indices: Sequence[int]) -> tuple[list[int], list[str]]:
        """Split ``indices`` into those that decode and the names of the files that do not."""
        good, bad = [], []
        for i in indices:
            try:
                self[i]
            except DamagedImage:
                bad.append(self.item_name(i))
            else:
                good.append(i)
        return good, bad


# ------------------------------------------------------------------------------------------ sources


def _sample(root: str, split: str, download: bool, image_size: int | None) -> ImageDataset:
    blobs: dict[str, bytes] = {}
    ref = resources.files("harden") / "_sample" / "cifar10-sample.tar.gz"
    with ref.open("rb") as fh, tarfile.open(fileobj=io.BytesIO(fh.read()), mode="r:gz") as tar:
        for info in tar.getmembers():
            if info.isfile() and info.name.startswith(f"{split}/"):
                blobs[info.name] = tar.extractfile(info).read()  # type: ignore[union-attr]
    names = sorted(blobs)
    labels = [CIFAR10_CLASSES.index(Path(n).parts[1]) for n in names]
    return ImageDataset("sample", split, CIFAR10_CLASSES, names, lambda n: Image.open(io.BytesIO(blobs[n])),
                        labels, image_size)


_IMG_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")


def _imagefolder(root: str, split: str, download: bool, image_size: int | None) -> ImageDataset:
    base = Path(root)
    if not base.is_dir():
        raise UsageError(f"data root '{root}' does not exist or is not a directory")
    folder = base / split if (base / split).is_dir() else base
    if folder is base and any((base / s).is_dir() for s in SPLITS):
        present = [s for s in SPLITS if (base / s).is_dir()]
        raise UsageError(f"'{root}' has no '{split}' split (it has: {', '.join(present)}); pick one with --split")
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise UsageError(f"'{folder}' has no class folders; an ImageFolder tree is ROOT/<class>/<image>")
    items, labels = [], []
    for label, cls in enumerate(classes):
        files = sorted(p for p in (folder / cls).rglob("*") if p.suffix.lower() in _IMG_EXT)
        items += files
        labels += [label] * len(files)
    if not items:
        raise UsageError(f"'{folder}' holds no images")
    return ImageDataset(f"imagefolder:{root}", split, classes, items, Image.open, labels, image_size)


def _cifar(kind: str) -> Callable[[str, str, bool, int | None], ImageDataset]:
    def build(root: str, split: str, download: bool, image_size: int | None) -> ImageDataset:
        import torchvision

        cls = torchvision.datasets.CIFAR10 if kind == "cifar10" else torchvision.datasets.CIFAR100
        if not Path(root).is_dir() and not download:
            raise UsageError(f"data root '{root}' does not exist (pass --download to fetch {kind} there)")
        try:
            ds = cls(root, train=(split == "train"), download=download)
        except RuntimeError as exc:
            raise UsageError(f"{kind} not found in '{root}' ({exc}); pass --download to fetch it") from exc
        data = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        return ImageDataset(f"{kind}:{root}", split, ds.classes, list(range(len(data))),
                            lambda i: data[i].float().div(255.0), ds.targets, image_size)

    return build


@dataclass(frozen=True)
class DataSource:
    name: str
    description: str
    build: Callable[[str, str, bool, int | None], ImageDataset]
    needs_root: bool = True


DATA_SOURCES: dict[str, DataSource] = {
    "sample": DataSource("sample", "CIFAR-10 sample bundled with harden (2000 train / 1000 test)", _sample, False),
    "imagefolder": DataSource("imagefolder", "ImageFolder tree: ROOT[/train|/test]/<class>/<image>", _imagefolder),
    "cifar10": DataSource("cifar10", "torchvision CIFAR-10 (python pickle format)", _cifar("cifar10")),
    "cifar100": DataSource("cifar100", "torchvision CIFAR-100 (python pickle format)", _cifar("cifar100")),
}


def check_spec(spec: str, split: str = "test", *, download: bool = False) -> None:
    """Cheap validation of a data spec (source name, root folder, split) before anything is loaded."""
    if split not in SPLITS:
        raise UsageError(f"split must be one of {', '.join(SPLITS)}, got '{split}'")
    kind, _, root = spec.partition(":")
    if kind not in DATA_SOURCES:
        raise UsageError(f"unknown data source '{kind}'{close_matches(kind, DATA_SOURCES)} "
                         "(use sample, imagefolder:ROOT, cifar10:ROOT or cifar100:ROOT)")
    if DATA_SOURCES[kind].needs_root:
        if not root:
            raise UsageError(f"data spec '{spec}' needs a root folder: {kind}:ROOT")
        if not Path(root).is_dir() and not (download and kind != "imagefolder"):
            raise UsageError(f"data root '{root}' does not exist or is not a directory"
                             + (f" (pass --download to fetch {kind} there)" if kind != "imagefolder" else ""))


def load_dataset(spec: str, split: str = "test", *, download: bool = False,
                 image_size: int | None = None) -> ImageDataset:
    """Open the dataset a spec names. ``image_size`` resizes (short side + centre crop) when needed."""
    check_spec(spec, split, download=download)
    kind, _, root = spec.partition(":")
    source = DATA_SOURCES[kind]
    ds = source.build(root, split, download, image_size)
    if len(ds) == 0:
        raise UsageError(f"the {split} split of '{spec}' is empty")
    return ds


@dataclass
class Selection:
    """Which examples were taken, recorded in reports so a run can be repeated exactly."""

    spec: str
    split: str
    n: int
    mode: str                       # "first" | "random"
    seed: int | None
    indices: list[int] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)   # damaged images left out (--skip-bad-images)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"data": self.spec, "split": self.split, "n": self.n, "selection": self.mode}
        if self.mode == "random":
            out["selection_seed"] = self.seed
        out["indices_head"] = self.indices[:10]
        if self.skipped:
            out["skipped_images"] = len(self.skipped)
            out["skipped_files"] = self.skipped[:20]
        return out


def skip_unreadable(dataset: ImageDataset, selection: Selection) -> Selection:
    """The selection without the examples whose images cannot be decoded; they are listed in ``skipped``."""
    good, bad = dataset.readable(selection.indices)
    if not good:
        raise UsageError(f"none of the {selection.n} selected images of '{dataset.spec}' can be read "
                         f"(first: '{bad[0]}')")
    return Selection(selection.spec, selection.split, len(good), selection.mode, selection.seed, good,
                     selection.skipped + bad)


def select(dataset: ImageDataset, n: int | None, *, random_subset: bool = False,
           seed: int = 0) -> Selection:
    """The first ``n`` examples, or a seeded random subset of ``n``; all when ``n`` is None."""
    total = len(dataset)
    if n is not None and n <= 0:
        raise UsageError(f"n must be positive, got {n}")
    n = total if n is None else min(n, total)
    if random_subset:
        gen = torch.Generator().manual_seed(seed)
        indices = torch.randperm(total, generator=gen)[:n].tolist()
        return Selection(dataset.spec, dataset.split, n, "random", seed, indices)
    return Selection(dataset.spec, dataset.split, n, "first", None, list(range(n)))


def load_tensors(dataset: ImageDataset, selection: Selection) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the selected examples into ``(x, y)`` tensors."""
    xs, ys = [], []
    for i in selection.indices:
        x, y = dataset[i]
        xs.append(x)
        ys.append(y)
    if not xs:
        raise HardenError("no examples selected")
    return torch.stack(xs), torch.tensor(ys, dtype=torch.long)
