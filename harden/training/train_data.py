"""The data of a fine-tuning run: the dataset checked against the model, the held-out split, and
:class:`TrainData`, the training examples delivered as uint8 batches in a seeded order per epoch."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from harden.data import DamagedImage, ImageDataset, as_image_dataset, has_class_names, load_dataset
from harden.data.images import held_warnings
from harden.errors import UsageError
from harden.model import HardenedModel
from harden.runtime.session import DistSession
from harden.schemas.finetune import FinetuneConfig
from harden.seeding import derive_seed
from harden.training.uint8_images import AsUint8, decode_uint8, place_images


def default_workers() -> int:
    """Decoding worker processes when the settings leave them open: the cores but one, at most 8."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def resolve_data(data: Any, model: HardenedModel, download: bool, *, split: str = "train",
                 resize: int | str | None = None, crop: str = "center") -> ImageDataset:
    """The training data ``data`` names, checked against the model's classes and input.

    ``data`` is a data spec (its ``split``, brought to the model's input with ``resize``/``crop``), an
    ImageDataset, a torch Dataset or DataLoader, or ``(x, y)`` tensors (see :func:`harden.data.as_image_dataset`).
    """
    size = model.input_size
    with held_warnings():  # warned only when the data fits the model
        if isinstance(data, str):
            ds = load_dataset(data, split, download=download, image_size=size, resize=resize, crop=crop)
        else:
            classes = None if has_class_names(data) else model.num_classes
            ds = as_image_dataset(data, classes=classes, input_size=size)
        if ds.num_classes != model.num_classes:
            raise UsageError(
                f"the data '{ds.spec}' has {ds.num_classes} classes but the model has {model.num_classes} outputs; "
                f"build the model with --num-classes {ds.num_classes} or use matching data")
        first = _first_image(ds)
        if tuple(first.shape) != tuple(size):
            raise UsageError(f"the data '{ds.spec}' gives images of shape {tuple(first.shape)}, "
                             f"the model takes {tuple(size)}")
    return ds


def _first_image(ds: ImageDataset) -> torch.Tensor:
    """The first image of ``ds`` that decodes (a damaged one is reported later, or skipped)."""
    for i in range(min(len(ds), 64)):
        try:
            return ds[i][0]
        except DamagedImage:
            continue
    return ds[0][0]


def held_out_count(val_n: int, n: int) -> int:
    """Validation images held out of ``n`` training images: ``val_n`` while it is at most a third of them,
    else a tenth of them (at least 1, leaving at least 2 to train on)."""
    if val_n <= n // 3:
        return val_n
    return max(0, min(max(1, n // 10), n - 2))


def split_indices(n: int, cfg: FinetuneConfig) -> tuple[list[int], list[int]]:
    """Held-out validation indices and training indices of the training split (seeded, disjoint).

    The held-out count is :func:`held_out_count` of ``cfg.val_n`` (so small data keeps most of its images).
    """
    held = held_out_count(cfg.val_n, n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(cfg.seed, "split") % 2**31)).tolist()
    val, train = sorted(perm[:held]), perm[held:]
    if cfg.train_n is not None:
        train = train[: cfg.train_n]
    return val, sorted(train)


class TrainData:
    """Training examples in a seeded order per epoch, sharded across processes, delivered as uint8 batches.

    Small datasets (the usual 32x32 sets) are decoded once and kept on the training device; larger ones
    are kept in host memory, or streamed through a DataLoader with pinned memory when over the cache limit.
    """

    def __init__(self, dataset: ImageDataset, indices: Sequence[int], *, batch_size: int, device: torch.device,
                 dist: DistSession, seed: int, workers: int, cache_limit_gb: float) -> None:
        self.dataset = dataset
        self.indices = list(indices)
        self.batch_size = batch_size
        self.device = device
        self.dist = dist
        self.seed = seed
        self.workers = workers
        c, h, w = dataset[self.indices[0]][0].shape
        self.image_shape = (c, h, w)
        nbytes = len(self.indices) * c * h * w
        self.cached = nbytes <= cache_limit_gb * 2**30
        self.x: torch.Tensor | None = None
        self.y: torch.Tensor | None = None
        if self.cached:
            x, y = decode_uint8(dataset, self.indices, workers)
            self.x, self.y = place_images(x, device), y.to(device)

    def order(self, epoch: int) -> list[int]:
        """Positions (into ``indices``) this process trains on in ``epoch``: a distributed sampler's shard."""
        sampler = torch.utils.data.DistributedSampler(
            range(len(self.indices)), num_replicas=self.dist.world, rank=self.dist.rank, shuffle=True,
            seed=self.seed, drop_last=False)
        sampler.set_epoch(epoch)
        return list(sampler)

    def batch_positions(self, epoch: int) -> list[list[int]]:
        pos = self.order(epoch)
        out = [pos[i:i + self.batch_size] for i in range(0, len(pos), self.batch_size)]
        if len(out) > 1 and len(out[-1]) < 2:  # a batch of one breaks batch norm in train mode
            out.pop()
        return out

    def __len__(self) -> int:
        return len(self.batch_positions(0))

    def batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(uint8 images, labels) on the device, in this epoch's order."""
        plan = self.batch_positions(epoch)
        if self.x is not None and self.y is not None:
            flat = torch.tensor([i for b in plan for i in b], dtype=torch.long)
            on_dev = self.x.device == self.device
            flat_dev = flat.to(self.device)
            start = 0
            for b in plan:
                rows = slice(start, start + len(b))
                start += len(b)
                if on_dev:
                    yield self.x.index_select(0, flat_dev[rows]), self.y.index_select(0, flat_dev[rows])
                else:
                    xb = self.x.index_select(0, flat[rows])
                    if self.device.type == "cuda":
                        xb = xb.pin_memory()
                    yield xb.to(self.device, non_blocking=True), self.y.index_select(0, flat_dev[rows])
            return
        src = AsUint8(self.dataset, self.indices)
        loader = torch.utils.data.DataLoader(src, batch_sampler=plan, num_workers=self.workers,
                                             pin_memory=self.device.type == "cuda",
                                             persistent_workers=False)
        for xb, yb in loader:
            yield xb.to(self.device, non_blocking=True), yb.long().to(self.device, non_blocking=True)

    def clean_batches(self, n: int) -> Iterator[torch.Tensor]:
        """The first ``n`` examples of a fixed seeded order as float batches (for batch-norm recalibration)."""
        gen = torch.Generator().manual_seed(self.seed + 7)
        pos = torch.randperm(len(self.indices), generator=gen)[:n].tolist()
        for i in range(0, len(pos), self.batch_size):
            chunk = pos[i:i + self.batch_size]
            if self.x is not None:
                xb = self.x.index_select(0, torch.tensor(chunk, device=self.x.device))
            else:
                xb = torch.stack([AsUint8(self.dataset, self.indices)[j][0] for j in chunk])
            yield xb.to(self.device).float().div_(255)
