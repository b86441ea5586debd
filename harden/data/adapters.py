"""The user's own data objects as an :class:`~harden.data.images.ImageDataset`: a torch ``Dataset``, a
``DataLoader`` or ``(x, y)`` tensors (:func:`as_image_dataset`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, IterableDataset

from harden.data.images import ImageDataset, Preprocess, checked_output
from harden.errors import UsageError

_KINDS = ("a data spec (sample, imagefolder:ROOT, cifar10:ROOT, idx:DIR, npz:FILE), a harden ImageDataset, a torch "
          "Dataset or DataLoader of (image, label) pairs, or (x, y) tensors")


def _label(value: Any, where: str) -> int:
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        return int(value.item())
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise UsageError(f"{where} must give integer class labels, got {type(value).__name__}"
                     + (f" {value.dtype}" if isinstance(value, torch.Tensor) else ""))


def _class_names(classes: Sequence[str] | int | None, labels: Sequence[int], where: str) -> list[str]:
    """Names for ``classes`` (names, a count, or None: as many as the labels need), checked against ``labels``."""
    top = max(labels, default=0)
    if min(labels, default=0) < 0:
        raise UsageError(f"{where} holds negative labels; labels are 0 .. classes - 1")
    if classes is None:
        return [str(i) for i in range(top + 1)]
    names = [str(i) for i in range(classes)] if isinstance(classes, int) else [str(c) for c in classes]
    if top >= len(names):
        raise UsageError(f"{where} has labels up to {top} but {len(names)} classes")
    return names


def _pairs(batch: Any, where: str) -> tuple[Any, Any]:
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    if isinstance(batch, dict) and {"image", "label"} <= set(batch):
        return batch["image"], batch["label"]
    raise UsageError(f"{where} must give (image, label) pairs, got {type(batch).__name__}")


def _from_tensors(x: Any, y: Any, *, spec: str, classes: Sequence[str] | int | None,
                  pre: Preprocess) -> ImageDataset:
    what = "(x, y) tensors" if spec == "tensors" else f"the {spec}'s images"
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise UsageError(f"tensor data must be (x, y) tensors; got ({type(x).__name__}, {type(y).__name__})")
    if x.dim() != 4 or y.dim() != 1 or len(x) != len(y) or len(y) == 0:
        raise UsageError(f"{what} must be x of shape (N, C, H, W) and y of N labels, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise UsageError(f"the labels of {what} must be integers, got {y.dtype}")
    x = x.detach().cpu()
    if x.dtype != torch.uint8:
        lo, hi = float(x.min()), float(x.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise UsageError(f"{what} hold values in [{lo:.3g}, {hi:.3g}]; harden takes images in [0, 1] (the "
                             "model normalizes them itself)")
        x = x.float()
    pre.check_channels(x.shape[1], spec)
    labels = y.detach().cpu().long().tolist()
    return ImageDataset(spec, "given", _class_names(classes, labels, what), list(range(len(x))),
                        lambda i: x[i], labels, preprocess=pre)


def _gathered(batches: Iterable[Any], *, spec: str, batched: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (image, label) of ``batches`` (a DataLoader's batches, or single items) stacked into tensors."""
    xs, ys = [], []
    for batch in batches:
        xb, yb = _pairs(batch, f"the {spec}")
        if not isinstance(xb, torch.Tensor):
            raise UsageError(f"the {spec} must give image tensors, got {type(xb).__name__}; add a ToTensor-like "
                             "transform or pass the Dataset itself")
        xs.append(xb if batched else xb[None])
        ys.append(torch.as_tensor(yb).reshape(-1))
    if not xs:
        raise UsageError(f"the {spec} gave no images")
    return torch.cat(xs), torch.cat(ys)


def _dataset_item(dataset: Dataset, i: int, spec: str) -> Any:
    x, _ = _pairs(dataset[i], f"the {spec}")
    if isinstance(x, Image.Image):
        return x
    if isinstance(x, torch.Tensor) and x.dim() == 3:
        return x if x.dtype == torch.uint8 else checked_output(x, f"the {spec}")
    raise UsageError(f"the {spec} must give PIL images or (C, H, W) tensors, got "
                     f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")


def _from_dataset(dataset: Dataset, *, classes: Sequence[str] | int | None, pre: Preprocess) -> ImageDataset:
    """A map-style Dataset, read lazily; its labels from ``targets`` when it has them, else read once."""
    spec = f"dataset:{type(dataset).__name__}"
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise UsageError(f"the {spec} is empty")
    targets = getattr(dataset, "targets", None)
    if targets is not None and len(targets) == n:
        known = torch.as_tensor(targets)
        if known.is_floating_point() or known.dim() != 1:
            raise UsageError(f"the targets of the {spec} must be integer class labels, got {known.dtype}")
        labels = known.long().tolist()
    else:  # read every item once for its label
        labels = [_label(_pairs(dataset[i], f"the {spec}")[1], f"the {spec}") for i in range(n)]
    names = classes if classes is not None else getattr(dataset, "classes", None)
    return ImageDataset(spec, "given", _class_names(names, labels, f"the {spec}"), list(range(n)),
                        lambda i: _dataset_item(dataset, i, spec), labels, preprocess=pre)


def has_class_names(data: Any) -> bool:
    """Whether ``data`` (or a DataLoader's dataset) names its classes (a ``classes`` attribute, as torchvision's)."""
    owner = data.dataset if isinstance(data, DataLoader) else data
    return isinstance(data, ImageDataset) or getattr(owner, "classes", None) is not None


def as_image_dataset(data: Any, *, classes: Sequence[str] | int | None = None,
                     input_size: int | Sequence[int] | None = None) -> ImageDataset:
    """``data`` as an :class:`ImageDataset` of the model's input (channels and size converted as for data specs).

    ``data`` is an ImageDataset (returned as it is), ``(x, y)`` tensors (x: (N, C, H, W), uint8 or float
    in [0, 1]; y: N integer labels), a ``DataLoader`` (iterated once into tensors), an ``IterableDataset``
    (iterated once) or a map-style torch ``Dataset`` whose items are ``(image, label)`` with a PIL image
    or a (C, H, W) tensor (read lazily; labels from its ``targets`` when it has them). ``classes``: the
    class names or their number (default: the dataset's ``classes``, else as many as the labels need).
    ``input_size``: the model's input, N, (H, W) or (C, H, W).

    >>> ds = as_image_dataset(torchvision.datasets.MNIST("data", train=False), input_size=(1, 28, 28))  # doctest: +SKIP
    """
    pre = Preprocess.make(input_size)
    if isinstance(data, ImageDataset):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return _from_tensors(data[0], data[1], spec="tensors", classes=classes, pre=pre)
    if isinstance(data, DataLoader):
        x, y = _gathered(data, spec="DataLoader", batched=True)
        named = classes if classes is not None else getattr(data.dataset, "classes", None)
        return _from_tensors(x, y, spec="DataLoader", classes=named, pre=pre)
    if isinstance(data, IterableDataset):
        x, y = _gathered(data, spec="IterableDataset", batched=False)
        return _from_tensors(x, y, spec="IterableDataset", classes=classes, pre=pre)
    if isinstance(data, Dataset) and hasattr(data, "__len__"):
        return _from_dataset(data, classes=classes, pre=pre)
    raise UsageError(f"data must be {_KINDS}; got {type(data).__name__}")
