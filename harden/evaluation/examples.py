"""The examples an evaluation attacks: chosen from a data spec, a dataset or ``(x, y)`` tensors."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from harden.data import (
    ImageDataset,
    Selection,
    as_image_dataset,
    has_class_names,
    load_dataset,
    select,
    skip_unreadable,
)
from harden.data.images import held_warnings
from harden.errors import UsageError
from harden.schemas.evaluate import EvaluateConfig

PRELOAD_LIMIT = 2 << 30    # examples up to this many bytes are held in memory, larger sets load per batch


class Examples:
    """The selected examples, held in memory or (for large sets) loaded batch by batch."""

    def __init__(self, *, x: torch.Tensor | None = None, y: torch.Tensor | None = None,
                 dataset: ImageDataset | None = None, indices: Sequence[int] | None = None) -> None:
        self.dataset = dataset
        self.indices = list(indices) if indices is not None else list(range(len(y) if y is not None else 0))
        self.files = dataset.file_names(self.indices) if dataset is not None else None  # for file data
        if y is None:
            assert dataset is not None
            y = torch.tensor([dataset.labels[i] for i in self.indices], dtype=torch.long)
        self.y = y.long().cpu()
        self.x = x
        if self.x is None and dataset is not None:
            first, _ = dataset[self.indices[0]]
            if first.numel() * 4 * len(self.indices) <= PRELOAD_LIMIT:
                self.x = torch.stack([first] + [dataset[i][0] for i in self.indices[1:]])

    @property
    def n(self) -> int:
        return len(self.y)

    def get(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels at ``positions`` (indices into the selection)."""
        if self.x is not None:
            return self.x[positions], self.y[positions]
        assert self.dataset is not None
        return (torch.stack([self.dataset[self.indices[int(p)]][0] for p in positions]), self.y[positions])

    def digest(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps(self.indices).encode())
        h.update(self.y.numpy().tobytes())
        if self.dataset is None and self.x is not None:
            h.update(self.x.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


def device_of(model: nn.Module) -> torch.device:
    """Where ``model``'s parameters are (the CPU for a model without any)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _num_classes(model: nn.Module, x: torch.Tensor) -> int:
    n = getattr(model, "num_classes", None)
    if isinstance(n, int):
        return n
    with torch.no_grad():
        return int(model(x).shape[-1])


def _from_tensors(x: torch.Tensor, y: torch.Tensor, model: nn.Module,
                  cfg: EvaluateConfig) -> tuple[Examples, dict[str, Any]]:
    if x.dim() != 4 or y.dim() != 1 or len(x) != len(y) or len(y) == 0:
        raise UsageError("tensor data must be (x, y) with x of shape (N, C, H, W) and N labels")
    total = len(y)
    if cfg.n is not None and cfg.n <= 0:
        raise UsageError(f"n must be positive, got {cfg.n}")
    k = total if cfg.n is None else min(cfg.n, total)
    if cfg.random_subset:
        idx = torch.randperm(total, generator=torch.Generator().manual_seed(cfg.seed))[:k].tolist()
    else:
        idx = list(range(k))
    examples = Examples(x=x[idx].detach().cpu().float(), y=y[idx], indices=idx)
    desc = {"data": "tensors", "split": None, "n": k, "selection": "random" if cfg.random_subset else "first",
            "indices_head": idx[:10]}
    if cfg.random_subset:
        desc["selection_seed"] = cfg.seed
    label_max = int(y.max())
    ncls = _num_classes(model, examples.x[:2].to(device_of(model)))  # type: ignore[index]
    if label_max >= ncls:
        raise UsageError(f"labels go up to {label_max} but the model has {ncls} classes")
    return examples, desc


def _dataset_for(data: Any, model: nn.Module, cfg: EvaluateConfig) -> ImageDataset:
    """The dataset ``data`` names, its images brought to the model's input (its ``input_size``, if it has one)."""
    insize = getattr(model, "input_size", None)
    size = tuple(insize) if isinstance(insize, (tuple, list)) and len(insize) == 3 else None
    if isinstance(data, str):
        return load_dataset(data, cfg.split, download=cfg.download, image_size=size,
                            resize=getattr(cfg, "resize", None), crop=getattr(cfg, "crop", "center"))
    ncls = getattr(model, "num_classes", None)
    classes = None if has_class_names(data) or not isinstance(ncls, int) else ncls
    return as_image_dataset(data, classes=classes, input_size=size)


def select_examples(data: Any, model: nn.Module, cfg: EvaluateConfig) -> tuple[Examples, dict[str, Any]]:
    """The examples ``cfg`` asks for (first ``n`` or a seeded random subset) and their description."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return _from_tensors(data[0], data[1], model, cfg)
    with held_warnings():  # the data's warnings only when it fits the model
        return _from_dataset(data, model, cfg)


def _from_dataset(data: Any, model: nn.Module, cfg: EvaluateConfig) -> tuple[Examples, dict[str, Any]]:
    dataset = _dataset_for(data, model, cfg)
    selection: Selection = select(dataset, cfg.n, random_subset=cfg.random_subset, seed=cfg.seed)
    if cfg.skip_bad_images:
        selection = skip_unreadable(dataset, selection)
    examples = Examples(dataset=dataset, indices=selection.indices)
    probe = examples.get(torch.arange(min(2, examples.n)))[0].to(device_of(model))
    ncls = _num_classes(model, probe)
    if ncls != dataset.num_classes and not isinstance(data, (str, ImageDataset)) and not has_class_names(data) \
            and max(dataset.labels) < ncls:
        dataset.classes = [str(i) for i in range(ncls)]  # unnamed labels that fit the model's classes
    if ncls != dataset.num_classes:
        raise UsageError(f"the model has {ncls} classes but {dataset.spec} has {dataset.num_classes}; "
                         "evaluate on data with the model's classes (or rebuild the model with --num-classes)")
    return examples, selection.describe()
