"""A second training source mixed into every batch at a fixed fraction (``--extra-data``).

The extra-data papers (Carmon et al. 2019, Gowal et al. 2021, Wang et al. 2023) train on batches
that hold a fixed share of extra images, labelled or pseudo-labelled by a teacher, while the epoch
stays defined by the main data. Here every batch of ``batch_size`` holds ``round(fraction *
batch_size)`` extra examples; they come from an endless stream of seeded permutations of the extra
set (no example repeats before the whole set has been seen), and global step ``t`` takes the stream's
block ``t``, split among the processes. The stream is a pure function of (seed, step), so a resumed
run draws exactly what the uninterrupted run drew, with nothing to save in the checkpoint.

Pseudo-labels are computed once, before training, as the argmax of the teacher in eval mode (fp32).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from harden.data import ImageDataset, load_dataset
from harden.data.images import held_warnings
from harden.errors import UsageError
from harden.model import HardenedModel
from harden.runtime.modes import eval_mode
from harden.runtime.store import state_digest
from harden.schemas.finetune import extra_count
from harden.seeding import derive_seed
from harden.training.uint8_images import decode_uint8, place_images

_LABEL_BATCH = 256


@dataclass
class Teacher:
    """A pseudo-labelling model and how the run names it."""

    model: nn.Module
    spec: str
    digest: str


def teacher_name(module: nn.Module) -> str:
    """How a teacher given as a module is recorded: ``module:`` and its model spec (a HardenedModel), else its class."""
    return "module:" + (module.spec if isinstance(module, HardenedModel) else type(module).__name__)


def load_teacher(teacher: str | nn.Module, *, trust_code: bool = False) -> Teacher:
    """The ``--pseudo-label`` model: a harden file (or, in the library, a module)."""
    if isinstance(teacher, nn.Module):
        return Teacher(teacher, teacher_name(teacher), state_digest(teacher))
    if not isinstance(teacher, str) or not os.path.isfile(teacher):
        raise UsageError(f"--pseudo-label takes a harden .safetensors file holding the teacher's weights; "
                         f"'{teacher}' is not a file (write one with harden apply --weights or harden finetune)")
    from harden.serialization import load

    return Teacher(model := load(teacher, trust_code=trust_code), teacher, state_digest(model))


@torch.no_grad()
def pseudo_labels(teacher: nn.Module, x_u8: torch.Tensor, *, num_classes: int, device: torch.device,
                  batch_size: int = _LABEL_BATCH) -> torch.Tensor:
    """The teacher's argmax class for each uint8 image, computed in eval mode and fp32 (modes restored)."""
    with eval_mode(teacher.to(device)):
        out = []
        for i in range(0, x_u8.shape[0], batch_size):
            logits = teacher(x_u8[i:i + batch_size].to(device).float().div_(255))
            if logits.dim() != 2 or logits.shape[1] != num_classes:
                raise UsageError(f"the --pseudo-label teacher gives outputs of shape {tuple(logits.shape[1:])}, "
                                 f"the model being trained has {num_classes} classes; use a teacher for the same "
                                 "classes")
            out.append(logits.argmax(1))
        return torch.cat(out).to(device)


def check_extra_dataset(extra: ImageDataset, main: ImageDataset, image_shape: tuple[int, ...], *,
                        labelled: bool) -> None:
    """Refuse extra data whose classes (when its labels are used) or image shape differ from the main data's."""
    if labelled and (extra.num_classes != main.num_classes or list(extra.classes) != list(main.classes)):
        raise UsageError(
            f"the extra data '{extra.spec}' has {extra.num_classes} classes ({', '.join(extra.classes[:4])}...) but "
            f"the main data '{main.spec}' has {main.num_classes} ({', '.join(main.classes[:4])}...); use extra data "
            "with the same classes in the same order, or label it with --pseudo-label MODEL")
    if len(extra) == 0:
        raise UsageError(f"the extra data '{extra.spec}' has no training images")
    shape = tuple(extra[0][0].shape)
    if shape != tuple(image_shape):
        raise UsageError(f"the extra data '{extra.spec}' gives images of shape {shape}, the model takes "
                         f"{tuple(image_shape)}")


class ExtraData:
    """The extra examples (uint8 images and labels, decoded once) and their per-step draw."""

    def __init__(self, x_u8: torch.Tensor, y: torch.Tensor, *, per_batch: int, seed: int, rank: int, world: int,
                 device: torch.device, info: dict[str, Any]) -> None:
        self.x = x_u8
        self.y = y.to(device)
        self.per_batch = per_batch
        self.seed = seed
        self.rank = rank
        self.world = world
        self.device = device
        self.info = info
        self._perms: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def _perm(self, cycle: int) -> torch.Tensor:
        if cycle not in self._perms:
            if len(self._perms) >= 2:
                self._perms.pop(min(self._perms))
            gen = torch.Generator().manual_seed(derive_seed(self.seed, "extra-data", cycle) % 2**63)
            self._perms[cycle] = torch.randperm(len(self), generator=gen)
        return self._perms[cycle]

    def positions(self, step: int) -> torch.Tensor:
        """Indices of the extra examples this process mixes into global step ``step``."""
        n = len(self)
        start = (step * self.world + self.rank) * self.per_batch
        flat = torch.arange(start, start + self.per_batch)
        cycles = flat // n
        out = torch.empty_like(flat)
        for c in cycles.unique().tolist():
            sel = cycles == c
            out[sel] = self._perm(int(c))[flat[sel] % n]
        return out

    def take(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 images, labels) on the training device for global step ``step``."""
        idx = self.positions(step)
        xb = self.x.index_select(0, idx.to(self.x.device))
        return xb.to(self.device, non_blocking=True), self.y.index_select(0, idx.to(self.device))


def load_extra(spec: str | ImageDataset, main: ImageDataset, image_shape: tuple[int, ...], *, fraction: float,
               batch_size: int, seed: int, rank: int, world: int, device: torch.device, workers: int,
               teacher: Teacher | None = None, download: bool = False, resize: int | str | None = None,
               crop: str = "center") -> ExtraData:
    """Read, check and (with a teacher) pseudo-label the extra data of a run (its train split, brought to
    ``image_shape`` (C, H, W) with the main data's ``resize`` and ``crop``)."""
    with held_warnings():  # the data's warnings only when it fits
        extra = spec if isinstance(spec, ImageDataset) else load_dataset(spec, "train", download=download,
                                                                         image_size=tuple(image_shape),
                                                                         resize=resize, crop=crop)
        check_extra_dataset(extra, main, image_shape, labelled=teacher is None)
    if teacher is not None:  # a teacher of the wrong size is refused before the whole set is decoded
        first = (extra[0][0] * 255).round().to(torch.uint8)[None]
        pseudo_labels(teacher.model, first, num_classes=main.num_classes, device=device)
    x, y = decode_uint8(extra, range(len(extra)), workers)
    if teacher is not None:
        y = pseudo_labels(teacher.model, x, num_classes=main.num_classes, device=device)
    x = place_images(x, device)
    per_batch = extra_count(fraction, batch_size)
    info = {"data": extra.spec, "n": len(extra), "fraction": fraction, "per_batch": per_batch,
            "main_per_batch": batch_size - per_batch, "labels": "pseudo" if teacher else "given",
            "teacher": teacher.spec if teacher else None, "teacher_digest": teacher.digest if teacher else None}
    return ExtraData(x, y, per_batch=per_batch, seed=seed, rank=rank, world=world, device=device, info=info)
