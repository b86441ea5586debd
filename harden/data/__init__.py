"""Data sources: turning a data spec into images in [0, 1] and labels.

Specs: ``sample`` (a CIFAR-10 sample bundled with harden), ``imagefolder:ROOT`` (an ImageFolder tree,
with split folders such as ``train/``, ``val/``, ``test/`` or none), ``cifar10:ROOT`` and
``cifar100:ROOT`` (torchvision's format; downloaded only when asked), ``idx:DIR`` (MNIST-like IDX
files) and ``npz:FILE`` (numpy arrays). :func:`load_dataset` brings the images to a model's input;
:func:`image_dataset` takes the user's own preprocessing; :func:`as_image_dataset` takes a torch
``Dataset``, a ``DataLoader`` or ``(x, y)`` tensors. How images are converted: :mod:`harden.data.images`.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from harden.data.adapters import as_image_dataset, has_class_names
from harden.data.arrays import Arrays, read_idx_dir, read_npz
from harden.data.images import DamagedImage, DataWarning, ImageDataset, Preprocess, Transform, data_warning
from harden.errors import HardenError, UsageError, close_matches

__all__ = ["CIFAR10_CLASSES", "DATA_SOURCES", "SPLITS", "DamagedImage", "DataSource", "DataWarning", "ImageDataset",
           "Preprocess", "Selection", "as_image_dataset", "check_spec", "has_class_names", "image_dataset",
           "load_dataset", "load_tensors", "select", "skip_unreadable"]

SPLITS = ("train", "test")  # the splits of sample, cifar10/cifar100 and idx; ImageFolder trees and npz name their own
FOLDER_SPLITS = ("train", "val", "valid", "validation", "test", "eval")  # folder names that mark a tree with splits
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_SAME_IMAGES = "training and evaluation read the same images"


# ------------------------------------------------------------------------------------------ sources


SAMPLES = ("cifar10", "fashion-mnist")  # sample (= sample:cifar10) and sample:fashion-mnist


def _sample(root: str, split: str, download: bool, pre: Preprocess) -> ImageDataset:
    if root not in ("", *SAMPLES):
        raise UsageError(f"unknown sample '{root}'{close_matches(root, SAMPLES)} (bundled: sample for CIFAR-10, "
                         "sample:fashion-mnist)")
    if root == "fashion-mnist":
        with resources.as_file(resources.files("harden") / "_sample" / "fashion-mnist") as folder:
            return _arrays("sample:fashion-mnist", split, read_idx_dir(str(folder), split), pre)
    pre.file_mode("sample")
    blobs: dict[str, bytes] = {}
    ref = resources.files("harden") / "_sample" / "cifar10-sample.tar.gz"
    with ref.open("rb") as fh, tarfile.open(fileobj=io.BytesIO(fh.read()), mode="r:gz") as tar:
        for info in tar.getmembers():
            if info.isfile() and info.name.startswith(f"{split}/"):
                blobs[info.name] = tar.extractfile(info).read()  # type: ignore[union-attr]
    names = sorted(blobs)
    labels = [CIFAR10_CLASSES.index(Path(n).parts[1]) for n in names]
    return ImageDataset("sample", split, CIFAR10_CLASSES, names, lambda n: Image.open(io.BytesIO(blobs[n])),
                        labels, preprocess=pre)


_IMG_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".webp", ".tif", ".tiff", ".gif")


def _split_folder(base: Path, root: str, split: str) -> Path:
    """The folder of ``split`` in an ImageFolder tree; the tree itself when it has no split folders (warned)."""
    if (base / split).is_dir():
        return base / split
    present = sorted(d.name for d in base.iterdir() if d.is_dir() and d.name.lower() in FOLDER_SPLITS)
    if present:
        raise UsageError(f"'{root}' has no '{split}' split (it has: {', '.join(present)}); pick one with --split")
    if split not in SPLITS:
        raise UsageError(f"'{root}' has no '{split}' split folder (nor any split folders: it is read as one set "
                         "for train and test)")
    data_warning(f"'{root}' has no split folders (train/, val/, test/): every split reads all of it, so "
                 f"{_SAME_IMAGES}; give it split folders, or fine-tune and evaluate on different trees")
    return base


def _imagefolder(root: str, split: str, download: bool, pre: Preprocess) -> ImageDataset:
    base = Path(root)
    if not base.is_dir():
        raise UsageError(f"data root '{root}' does not exist or is not a directory")
    pre.file_mode(f"imagefolder:{root}")
    folder = _split_folder(base, root, split)
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise UsageError(f"'{folder}' has no class folders; an ImageFolder tree is ROOT[/SPLIT]/<class>/<image>")
    items, labels = [], []
    for label, cls in enumerate(classes):
        files = sorted(p for p in (folder / cls).rglob("*") if p.suffix.lower() in _IMG_EXT and p.is_file())
        if not files:
            raise UsageError(f"class folder '{folder / cls}' holds no images; remove it or add images")
        items += files
        labels += [label] * len(files)
    return ImageDataset(f"imagefolder:{root}", split, classes, items, Image.open, labels, preprocess=pre, root=base)


def _arrays(spec: str, split: str, arrays: Arrays, pre: Preprocess) -> ImageDataset:
    """An ImageDataset over uint8 arrays read from a file."""
    pre.check_channels(arrays.x.shape[1], spec)
    if arrays.flat:
        data_warning(f"'{spec}' has no per-split arrays (x_train, x_test, ...): every split reads x and y, so "
                     f"{_SAME_IMAGES}")
    x = arrays.x
    return ImageDataset(spec, split, arrays.classes, list(range(len(x))), lambda i: x[i], arrays.labels,
                        preprocess=pre)


def _idx(root: str, split: str, download: bool, pre: Preprocess) -> ImageDataset:
    return _arrays(f"idx:{root}", split, read_idx_dir(root, split), pre)


def _npz(root: str, split: str, download: bool, pre: Preprocess) -> ImageDataset:
    return _arrays(f"npz:{root}", split, read_npz(root, split), pre)


def _cifar(kind: str) -> Callable[[str, str, bool, Preprocess], ImageDataset]:
    def build(root: str, split: str, download: bool, pre: Preprocess) -> ImageDataset:
        import torchvision

        cls = torchvision.datasets.CIFAR10 if kind == "cifar10" else torchvision.datasets.CIFAR100
        if not Path(root).is_dir() and not download:
            raise UsageError(f"data root '{root}' does not exist (pass --download to fetch {kind} there)")
        pre.check_channels(3, f"{kind}:{root}")
        try:
            ds = cls(root, train=(split == "train"), download=download)
        except RuntimeError as exc:
            raise UsageError(f"{kind} not found in '{root}' ({exc}); pass --download to fetch it") from exc
        data = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        return ImageDataset(f"{kind}:{root}", split, ds.classes, list(range(len(data))), lambda i: data[i],
                            ds.targets, preprocess=pre)

    return build


@dataclass(frozen=True)
class DataSource:
    """A registered kind of data spec (``name:ROOT``): how to build its dataset, and whether it needs a root."""

    name: str
    description: str
    build: Callable[[str, str, bool, Preprocess], ImageDataset]
    needs_root: bool = True
    splits: tuple[str, ...] | None = SPLITS  # None: any split name (the data names its own)
    root_is: str = "folder"                  # "folder" or "file"
    downloads: bool = False


DATA_SOURCES: dict[str, DataSource] = {
    "sample": DataSource("sample", "samples bundled with harden: sample (CIFAR-10, 2000 train / 1000 test) and "
                                   "sample:fashion-mnist (2000 train / 500 test, 1x28x28)", _sample, False),
    "imagefolder": DataSource("imagefolder", "ImageFolder tree: ROOT[/train|/val|/test|/NAME]/<class>/<image>",
                              _imagefolder, splits=None),
    "cifar10": DataSource("cifar10", "torchvision CIFAR-10 (python pickle format)", _cifar("cifar10"), downloads=True),
    "cifar100": DataSource("cifar100", "torchvision CIFAR-100 (python pickle format)", _cifar("cifar100"),
                           downloads=True),
    "idx": DataSource("idx", "IDX files of MNIST, Fashion-MNIST, KMNIST, EMNIST: DIR/{train,t10k}-images-idx3-ubyte"
                             "[.gz] and -labels-idx1-ubyte[.gz]", _idx),
    "npz": DataSource("npz", "numpy .npz file: x (uint8 images) and y (labels), or x_SPLIT/y_SPLIT; classes optional",
                      _npz, splits=None, root_is="file"),
}


def _check_split(kind: str, split: str) -> None:
    source = DATA_SOURCES[kind]
    if not split or not isinstance(split, str) or split in (".", "..") or any(c in split for c in "/\\:"):
        raise UsageError(f"split must be a name such as train, val or test, got '{split}'")
    if source.splits is not None and split not in source.splits:
        raise UsageError(f"split must be one of {', '.join(source.splits)} for {kind} data, got '{split}'")


def check_spec(spec: str, split: str = "test", *, download: bool = False) -> None:
    """Cheap validation of a data spec (source name, root, split) before anything is loaded."""
    kind, _, root = spec.partition(":")
    if kind not in DATA_SOURCES:
        raise UsageError(f"unknown data source '{kind}'{close_matches(kind, DATA_SOURCES)} "
                         "(use sample, imagefolder:ROOT, cifar10:ROOT, cifar100:ROOT, idx:DIR or npz:FILE)")
    _check_split(kind, split)
    source = DATA_SOURCES[kind]
    if not source.needs_root:
        return
    if not root:
        raise UsageError(f"data spec '{spec}' needs a {'file' if source.root_is == 'file' else 'root folder'}: "
                         f"{kind}:{'FILE' if source.root_is == 'file' else 'ROOT'}")
    if source.root_is == "file":
        if not Path(root).is_file():
            raise UsageError(f"data file '{root}' does not exist or is not a file")
    elif not Path(root).is_dir() and not (download and source.downloads):
        raise UsageError(f"data root '{root}' does not exist or is not a directory"
                         + (f" (pass --download to fetch {kind} there)" if source.downloads else ""))


def image_dataset(spec: str, split: str, *, input_size: int | Sequence[int] | None = None,
                  transform: Transform | None = None, resize: int | str | Sequence[int] | None = None,
                  crop: str = "center", download: bool = False) -> ImageDataset:
    """The ``split`` of data ``spec``, with harden's preprocessing or your own ``transform``.

    ``input_size`` is the model's input (N, (H, W) or (C, H, W); e.g. ``model.input_size``): images are
    converted to its channels, resized (the short side, or to ``resize``) and centre-cropped to it
    (``crop="none"``: resized straight to it). ``transform`` replaces that preprocessing: it takes a PIL
    image (mode ``L`` for a 1-channel ``input_size``, else ``RGB``) and returns a (C, H, W) tensor in
    [0, 1] (no normalization: the model does it). Training decodes each image once and augments on the
    device (``augment=``), so the transform is preprocessing, not random augmentation.

    >>> from torchvision.transforms import v2  # doctest: +SKIP
    >>> prep = v2.Compose([v2.Resize(72), v2.CenterCrop(64), v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    >>> ds = image_dataset("imagefolder:pets", "train", input_size=model.input_size, transform=prep)  # doctest: +SKIP
    >>> harden.finetune(model, ds, epochs=5)  # doctest: +SKIP
    """
    check_spec(spec, split, download=download)
    pre = Preprocess.make(input_size, resize=resize, crop=crop, transform=transform)
    kind, _, root = spec.partition(":")
    ds = DATA_SOURCES[kind].build(root, split, download, pre)
    if len(ds) == 0:
        raise UsageError(f"the {split} split of '{spec}' is empty")
    return ds


def load_dataset(spec: str, split: str = "test", *, download: bool = False,
                 image_size: int | Sequence[int] | None = None, resize: int | str | Sequence[int] | None = None,
                 crop: str = "center") -> ImageDataset:
    """Open the dataset a spec names, its images brought to ``image_size`` (N, (H, W) or (C, H, W)).

    Without ``image_size`` images keep their size (files are read as RGB). ``resize`` and ``crop`` as
    for :func:`image_dataset`.
    """
    return image_dataset(spec, split, input_size=image_size, resize=resize, crop=crop, download=download)


# ---------------------------------------------------------------------------------------- selection


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
    files: list[str] | None = None  # the files of ``indices`` (relative to the data root), for file data

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"data": self.spec, "split": self.split, "n": self.n, "selection": self.mode}
        if self.mode == "random":
            out["selection_seed"] = self.seed
        out["indices_head"] = self.indices[:10]
        if self.files is not None:
            out["files_head"] = self.files[:10]
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
                     selection.skipped + bad, dataset.file_names(good))


def _warn_if_few_classes(dataset: ImageDataset, n: int) -> None:
    """Warn when the first ``n`` examples of class-sorted data miss classes (a folder's first n are one class)."""
    labels = dataset.labels
    if n >= len(labels) or any(a > b for a, b in zip(labels, labels[1:])):
        return
    have, total = len(set(labels[:n])), len(set(labels))
    if have < total:
        data_warning(f"the first {n} images of the {dataset.split} split of '{dataset.spec}' hold {have} of its "
                     f"{total} classes (it is sorted by class); pass --random-subset for images of every class")


def select(dataset: ImageDataset, n: int | None, *, random_subset: bool = False,
           seed: int = 0) -> Selection:
    """The first ``n`` examples, or a seeded random subset of ``n``; all when ``n`` is None.

    The first ``n`` of data sorted by class (ImageFolder trees, the sample) miss classes: that is warned.
    """
    total = len(dataset)
    if n is not None and n <= 0:
        raise UsageError(f"n must be positive, got {n}")
    n = total if n is None else min(n, total)
    if random_subset:
        gen = torch.Generator().manual_seed(seed)
        indices = torch.randperm(total, generator=gen)[:n].tolist()
        return Selection(dataset.spec, dataset.split, n, "random", seed, indices, files=dataset.file_names(indices))
    _warn_if_few_classes(dataset, n)
    indices = list(range(n))
    return Selection(dataset.spec, dataset.split, n, "first", None, indices, files=dataset.file_names(indices))


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
