"""Adversarial fine-tuning of an existing model: PGD-AT, TRADES, MART and FGSM with a random start.

:func:`finetune` starts from the weights a model already has: batch-norm statistics are recalibrated
on clean training data (a transform changes what every layer sees), eps can be ramped up, and after
every epoch the clean and PGD accuracy on a held-out slice of the training split decide which weights
are kept (robust overfitting is the classic failure of long adversarial training). A checkpoint is
written after every epoch; ``resume=True`` continues an interrupted run to the same final weights (on
CPU, bit for bit: every random draw of an epoch comes from generators seeded by (seed, epoch, rank)).

Speed: the attack costs ``steps`` forward and backward passes per image, so on a GPU the attack and
the update run under bf16 autocast in channels-last layout, the training images live on the GPU as
uint8 (or come through pinned memory without blocking) and are augmented there. Validation and the
final numbers are computed in fp32. Under ``torchrun`` the model is wrapped in
DistributedDataParallel and each process trains on its shard of every epoch's order.

Options that live in their own modules: the losses (:mod:`harden.losses`), adversarial weight
perturbation (:mod:`harden.awp`, ``awp``) and a second data source mixed into every batch
(:mod:`harden.extra_data`, ``extra_data``).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harden import tracking
from harden.attacks import pgd_core
from harden.awp import WeightPerturbation
from harden.data import DamagedImage, ImageDataset, load_dataset
from harden.errors import HardenError, UsageError
from harden.extra_data import ExtraData, Teacher, load_extra, load_teacher, teacher_name
from harden.lipschitz import SpectralPenalty
from harden.losses import PAIRED, method_loss
from harden.model import HardenedModel
from harden.provenance import FinetuneEntry
from harden.runtime import events as ev
from harden.runtime.atomic import save_figure
from harden.runtime.modes import eval_mode, modes_kept
from harden.runtime.session import DistSession, session
from harden.runtime.stamp import device_text
from harden.runtime.store import Store, as_json, checkpoint_path_for, differences, sibling_path, state_digest
from harden.schemas.finetune import (  # noqa: F401  (the settings' schema; its names stay importable from here)
    ATTACK_MODES,
    CONFIG_FIELDS,
    KEEP,
    METHODS,
    NORMS,
    PRECISIONS,
    SCHEDULES,
    FinetuneConfig,
    check_config,
    make_config,
)
from harden.seeding import derive_seed
from harden.serialization import save

CHECKPOINT_FORMAT = "harden.checkpoint/1"

# Settings that change how a run computes but not what it computes: a resumed run may change them.
_NOT_FINGERPRINTED = ("compile", "workers", "log_every", "cache_limit_gb")


# ------------------------------------------------------------------------------- schedules, eps


def lr_at(cfg: FinetuneConfig, progress: float) -> float:
    """Learning rate at ``progress`` in [0, 1] of the run (a pure function, so resuming needs no state).

    cosine: lr to 0; multistep: lr/10 at 50% and again at 75% (the seeds' 100/150 of 200 epochs);
    onecycle: linear up to lr at 40%, then down to 0 (Wong et al.); constant.
    """
    t = min(max(progress, 0.0), 1.0)
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * t))
    if cfg.schedule == "multistep":
        return cfg.lr * (0.1 ** (int(t >= 0.5) + int(t >= 0.75)))
    if cfg.schedule == "onecycle":
        peak = 0.4
        return cfg.lr * (t / peak if t < peak else max(0.0, (1 - t) / (1 - peak)))
    return cfg.lr


def eps_at(cfg: FinetuneConfig, epochs_done: float) -> float:
    """eps after ``epochs_done`` (fractional) epochs: ramped linearly over ``eps_warmup`` epochs."""
    if cfg.eps_warmup <= 0:
        return cfg.eps
    return cfg.eps * min(1.0, epochs_done / cfg.eps_warmup)


# ----------------------------------------------------------------------------------- tensor ops


def augment(x: torch.Tensor, generator: torch.Generator, pad: int) -> torch.Tensor:
    """Random crop after zero padding by ``pad`` and random horizontal flip, batched on x's device.

    Works on uint8 or float batches (N, C, H, W); the flip is folded into the crop's column index.
    """
    n, c, h, w = x.shape
    dev = x.device
    flip = torch.rand(n, generator=generator, device=dev) < 0.5
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=dev)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=dev)
    xp = F.pad(x, (pad, pad, pad, pad)) if pad > 0 else x
    rows = oy[:, None] + torch.arange(h, device=dev)
    cols = ox[:, None] + torch.arange(w, device=dev)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    ni = torch.arange(n, device=dev)[:, None, None, None]
    ci = torch.arange(c, device=dev)[None, :, None, None]
    return xp[ni, ci, rows[:, None, :, None], cols[:, None, None, :]]


@contextlib.contextmanager
def _frozen(params: Sequence[nn.Parameter]) -> Iterator[None]:
    """Parameters without gradients while an attack asks only for input gradients."""
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)


def perturb(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, kind: str, eps: float, step: float,
            steps: int, norm: str, generator: torch.Generator) -> torch.Tensor:
    """Adversarial examples for training: ``pgd`` (CE, random start), ``fgsm-rs`` (one step from a
    random start), ``trades`` (KL to the clean prediction from a 0.001-Gaussian start) or ``mart``
    (CE from a 0.001-Gaussian start, as in MART's code).

    The model's mode is left as the caller set it; run it under autocast for bf16 attacks.
    """
    if eps <= 0:
        return x.detach()
    loss = "kl" if kind == "trades" else "ce"
    start = "gaussian" if kind in ("trades", "mart") else "uniform"
    return pgd_core(model, x, y, eps=eps, steps=1 if kind == "fgsm-rs" else steps, step=step, norm=norm,
                    loss=loss, start=start, generator=generator, float_logits=True)


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Batch-norm layers that keep running statistics."""
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterator[torch.Tensor] | Sequence[torch.Tensor]) -> int:
    """Recompute batch-norm running statistics as the plain average over ``batches`` of clean images.

    Returns the number of images seen (0 when the model has no batch norm). The model's modes are restored.
    """
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch counts equally
    seen = 0
    try:
        with modes_kept(model):
            model.train()
            for xb in batches:
                if xb.shape[0] < 2:
                    continue
                model(xb)
                seen += xb.shape[0]
    finally:
        for m, mom in zip(layers, momenta):
            m.momentum = mom
    return seen


class EMA:
    """Exponential moving average of a model's parameters and floating buffers (a full copy of the model).

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` so short runs are not dominated by the start.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model)
        self.module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self._pairs()

    def _pairs(self) -> None:
        self._float_dst: list[torch.Tensor] = []
        self._other_dst: list[torch.Tensor] = []
        for t in self.module.state_dict().values():
            (self._float_dst if t.is_floating_point() else self._other_dst).append(t)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        src_f, src_o = [], []
        for t in model.state_dict().values():
            (src_f if t.is_floating_point() else src_o).append(t)
        torch._foreach_lerp_(self._float_dst, src_f, 1.0 - d)
        for dst, src in zip(self._other_dst, src_o):
            dst.copy_(src)

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "state": self.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["state"])


# ------------------------------------------------------------------------------------------ data


class _AsUint8(torch.utils.data.Dataset):
    """Examples of an ImageDataset as uint8 (C, H, W) tensors."""

    def __init__(self, dataset: ImageDataset, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x, y = self.dataset[self.indices[i]]
        return x.mul(255).round_().clamp_(0, 255).to(torch.uint8), y


def _default_workers() -> int:
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def _decode(dataset: ImageDataset, indices: Sequence[int], workers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode the examples at ``indices`` once into a uint8 image tensor and a label tensor."""
    src = _AsUint8(dataset, indices)
    if workers > 0 and len(src) >= 4096:
        try:
            loader = torch.utils.data.DataLoader(src, batch_size=256, num_workers=workers)
            xs, ys = zip(*loader)
            return torch.cat(xs), torch.cat(ys).long()
        except Exception:  # a dataset that cannot go to worker processes: decode here
            pass
    xs, ys = [], []
    for i in range(len(src)):
        x, y = src[i]
        xs.append(x)
        ys.append(y)
    return torch.stack(xs), torch.tensor(ys, dtype=torch.long)


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
            x, y = _decode(dataset, self.indices, workers)
            if device.type == "cuda":
                free, _ = torch.cuda.mem_get_info(device)
                if nbytes < 0.25 * free:
                    x = x.to(device)
                else:
                    x = x.pin_memory()
            self.x, self.y = x, y.to(device)

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
        src = _AsUint8(self.dataset, self.indices)
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
                xb = torch.stack([_AsUint8(self.dataset, self.indices)[j][0] for j in chunk])
            yield xb.to(self.device).float().div_(255)


# ------------------------------------------------------------------------------------ the loop


class NonFiniteLoss(HardenError):
    """The training loss became NaN or infinite."""


class _Pair(nn.Module):
    """Clean and adversarial logits in one call, so TRADES and MART are one forward for DistributedDataParallel."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, x_adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(x), self.model(x_adv)




def _provenance_for_fingerprint(model: HardenedModel) -> dict[str, Any]:
    return model.provenance.without_versions().to_dict()


def curves_path_for(output: str | os.PathLike[str]) -> Path:
    """Where the training-curve PNG of a run writing ``output`` goes: ``OUT.curves.png``."""
    return sibling_path(output, ".curves.png")


class Trainer:
    """One fine-tuning run: model, optimizer, data, attacks, validation and checkpoints.

    :func:`finetune` drives it; ``benchmarks/train_throughput.py`` calls :meth:`train_step` directly.
    """

    def __init__(self, model: HardenedModel, cfg: FinetuneConfig, *, device: torch.device, dist: DistSession) -> None:
        self.cfg = cfg
        self.device = device
        self.dist = dist
        self.bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
        self.channels_last = device.type == "cuda" if cfg.channels_last is None else bool(cfg.channels_last)
        self.memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = model.to(device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        cuda = device.type == "cuda"
        if cuda:
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
        self.optimizer = torch.optim.SGD(self.params, lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay, nesterov=False, fused=True if cuda else None)
        self.ema = EMA(self.model, cfg.ema_decay) if cfg.ema else None
        self.penalty = _lipschitz_penalty(self.model, cfg.seed) if cfg.lipschitz_reg > 0 else None
        self.pad = max(1, round(model.input_size[-1] / 8))
        gen_device = device if device.type == "cuda" else torch.device("cpu")
        self.generator = torch.Generator(device=gen_device)
        self.generator.manual_seed(cfg.seed)
        self.attack_model: nn.Module = self.model
        objective: nn.Module = _Pair(self.model) if cfg.method in PAIRED else self.model
        if dist.active:
            from torch.nn.parallel import DistributedDataParallel

            # batch-norm buffers follow rank 0 at every forward (the default)
            objective = DistributedDataParallel(
                objective, device_ids=[device.index] if device.type == "cuda" else None)
        if cfg.compile:
            self.attack_model = torch.compile(self.model)
            objective = torch.compile(objective)
        self.objective = objective
        # the AWP pass runs outside DistributedDataParallel (it only asks for weight gradients)
        self.raw_objective: nn.Module = _Pair(self.attack_model) if cfg.method in PAIRED else self.attack_model
        self.awp = (WeightPerturbation(self.model, cfg.awp, all_sum=dist.all_sum, world=dist.world)
                    if cfg.awp > 0 else None)
        self.epoch = 0
        self.step_size = cfg.resolved_step_size()

    def autocast(self) -> contextlib.AbstractContextManager:
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def prepare(self, x_u8: torch.Tensor) -> torch.Tensor:
        """uint8 batch on the device -> augmented float images in [0, 1] in the training memory format."""
        if self.cfg.augment:
            x_u8 = augment(x_u8, self.generator, self.pad)
        x = x_u8.float().div_(255)
        return x.contiguous(memory_format=self.memory_format)

    def train_step(self, x_u8: torch.Tensor, y: torch.Tensor, *, eps: float, lr: float
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """One update on one batch; returns (summed loss, correct predictions on the trained inputs) as tensors."""
        cfg = self.cfg
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x = self.prepare(x_u8)
        x_adv = x
        if cfg.method != "clean" and eps > 0:
            kind = "pgd" if cfg.method == "pgd" else cfg.method
            if cfg.attack_mode == "eval":
                self.model.eval()
            else:
                self.model.train()
            with _frozen(self.params), self.autocast():
                x_adv = perturb(self.attack_model, x, y, kind=kind, eps=eps, step=self.step_size * eps / cfg.eps,
                                steps=cfg.steps, norm=cfg.norm, generator=self.generator)
        perturbation = contextlib.nullcontext()
        if self.awp_active():  # the weight perturbation, from the method's loss at the current weights
            deltas = self.awp.compute(lambda: self.loss(self.raw_objective, x, x_adv, y)[0])  # type: ignore[union-attr]
            perturbation = self.awp.applied(deltas)  # type: ignore[union-attr]
        self.model.train()
        with perturbation:  # the gradient at w + v; leaving the block restores w exactly
            loss, logits = self.loss(self.objective, x, x_adv, y)
            if self.penalty is not None:  # in fp32, outside autocast: power iteration needs the precision
                loss = loss + cfg.lipschitz_reg * self.penalty()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        n = y.shape[0]
        return loss.detach() * n, (logits.detach().argmax(1) == y).sum()

    def awp_active(self) -> bool:
        """Whether this epoch's updates use adversarial weight perturbation (after its warm-up)."""
        return self.awp is not None and self.cfg.method != "clean" and self.epoch >= self.cfg.resolved_awp_warmup()

    def loss(self, net: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """The method's loss (fp32) and the logits of the trained inputs, with ``net`` (a model or its pair)."""
        cfg = self.cfg
        with self.autocast():
            if cfg.method in PAIRED:
                logits_nat, logits = (t.float() for t in net(x, x_adv))
            else:
                logits_nat, logits = None, net(x_adv).float()
            loss = method_loss(cfg.method, logits, y, logits_nat=logits_nat, beta=cfg.beta,
                               label_smoothing=cfg.label_smoothing)
        return loss, logits

    def eval_model(self) -> nn.Module:
        """The weights that are validated and kept: the EMA copy when asked for, else the trained model."""
        return self.ema.module if self.ema is not None else self.model

    def validate(self, x_val: torch.Tensor, y_val: torch.Tensor) -> tuple[float, float]:
        """Clean and PGD accuracy in % (fp32, eval mode, PGD-``val_steps`` at the full eps, step eps/4) on this
        process's shard of the validation slice, summed over processes."""
        cfg = self.cfg
        model = self.eval_model()
        gen = torch.Generator(device=self.generator.device).manual_seed(derive_seed(cfg.seed, "validation"))
        shard = torch.arange(self.dist.rank, x_val.shape[0], self.dist.world)
        counts = torch.zeros(3, dtype=torch.float64, device=self.device)
        params = list(model.parameters())
        with eval_mode(model):
            for i in range(0, shard.numel(), max(1, cfg.batch_size)):
                idx = shard[i:i + cfg.batch_size].to(x_val.device)
                xb = x_val.index_select(0, idx).float().div_(255).contiguous(memory_format=self.memory_format)
                yb = y_val.index_select(0, idx)
                with torch.no_grad():
                    clean = (model(xb).argmax(1) == yb).sum()
                with _frozen(params):
                    x_adv = perturb(model, xb, yb, kind="pgd", eps=cfg.eps, step=cfg.eps / 4, steps=cfg.val_steps,
                                    norm=cfg.norm, generator=gen)
                with torch.no_grad():
                    robust = (model(x_adv).argmax(1) == yb).sum()
                counts += torch.stack([clean.double(), robust.double(), torch.tensor(float(yb.numel()),
                                                                                     device=self.device)])
        counts = self.dist.all_sum(counts)
        total = max(1.0, counts[2].item())
        return 100 * counts[0].item() / total, 100 * counts[1].item() / total

    def reseed(self, epoch: int) -> None:
        """Seed every random draw of ``epoch`` (augmentation, attack starts, dropout) from (seed, epoch, rank)."""
        s = derive_seed(self.cfg.seed, epoch, self.dist.rank)
        self.epoch = epoch
        self.generator.manual_seed(s)
        torch.manual_seed(s)


# ------------------------------------------------------------------------------------ artefacts


def checkpoint_store(path: Path) -> Store:
    """The per-epoch checkpoint of a fine-tuning run (a torch file holding tensors and the run's fingerprint)."""
    return Store(path, codec="torch", format=CHECKPOINT_FORMAT,
                 unreadable="checkpoint '{path}' could not be read ({reason}); it may be damaged: "
                            "start over with --force",
                 foreign="'{path}' is not a harden fine-tuning checkpoint")


def _fingerprint_diff(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between a checkpoint's fingerprint and this run's, in words (each setting by name)."""
    diffs = []
    for key, a, b in sorted(differences(saved, current, depth=1), key=lambda d: d[0]):
        if key == "config" and isinstance(a, dict) and isinstance(b, dict):
            diffs += [f"{k} ({x!r} -> {y!r})" for k, x, y in sorted(differences(a, b, depth=1), key=lambda d: d[0])]
        else:
            diffs.append({"recipe": "model recipe", "weights": "starting weights", "data": "data"}.get(key, key)
                         + (f" ({a!r} -> {b!r})" if key == "data" else ""))
    return diffs


def write_curves(path: str | os.PathLike[str], history: Sequence[dict[str, Any]], *, title: str = "",
                 best_epoch: int | None = None) -> Path:
    """A PNG with the training loss and the validation clean/robust accuracy per epoch."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(9, 3.6), dpi=100)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(epochs, [h["loss"] for h in history], marker="o", label="train loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.grid(alpha=0.3)
    ax1.legend()
    if any(h.get("val_clean") is not None for h in history):
        ax2.plot(epochs, [h["val_clean"] for h in history], marker="o", label="val clean")
        ax2.plot(epochs, [h["val_robust"] for h in history], marker="o", label="val PGD")
    ax2.plot(epochs, [h["train_acc"] for h in history], marker=".", linestyle=":", label="train (attacked)")
    if best_epoch is not None:
        ax2.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label=f"kept (epoch {best_epoch})")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy (%)")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


# ------------------------------------------------------------------------------------------- API


def _resolve_data(data: str | ImageDataset, model: HardenedModel, download: bool) -> ImageDataset:
    size = model.input_size
    if isinstance(data, ImageDataset):
        ds = data
    elif isinstance(data, str):
        ds = load_dataset(data, "train", download=download, image_size=size[-1])
    else:
        raise UsageError("data must be a data spec (sample, imagefolder:ROOT, cifar10:ROOT) or a harden ImageDataset")
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


def _lipschitz_penalty(model: nn.Module, seed: int) -> Any:
    """The ``--lipschitz-reg`` term: a seeded :class:`harden.lipschitz.SpectralPenalty` of ``model``."""
    return SpectralPenalty(model, seed=seed)


def finetune(model: HardenedModel, data: str | ImageDataset, *, output: str | os.PathLike[str] | None = None,
             resume: bool = False, force: bool = False, checkpoint: str | os.PathLike[str] | None = None,
             progress: bool = True, download: bool = False, device: str | torch.device | None = None,
             callback: Callable[[dict[str, Any]], None] | None = None, curves: bool = True,
             trust_code: bool = False, tracker: Any = None, **options: Any) -> HardenedModel:
    """Adversarially fine-tune a copy of ``model`` on the training split of ``data``; return it.

    ``options`` are :class:`FinetuneConfig` fields (``method="pgd"|"trades"|"mart"|"fgsm-rs"|"clean"``, ``eps``,
    ``steps``, ``epochs``, ``lr``, ``awp``, ``extra_data``, ``extra_fraction``, ...); ``pseudo_label`` (the
    teacher) may be a harden file (``trust_code`` as for :func:`harden.load`) or a module. With ``output`` the
    result is written as a harden safetensors file whose provenance gains a ``finetune`` entry, with a
    training-curve PNG beside it, and a checkpoint
    (``OUT.ckpt.pt``) is written after every epoch; ``resume=True`` continues from it. ``callback``
    is called after every epoch with that epoch's numbers. Under torchrun only rank 0 writes files.
    ``tracker`` (``"mlflow"``, ``"mlflow:URI"`` or a :class:`harden.tracking.Tracker`) records the settings,
    the per-epoch numbers and the output files (see :mod:`harden.tracking`).
    """
    if not isinstance(model, HardenedModel):
        raise UsageError("finetune() takes a model made by harden.load_model, harden.apply, harden.load or harden.wrap")
    teacher_arg = options.get("pseudo_label")
    if isinstance(teacher_arg, nn.Module):  # recorded by name; its digest goes into the fingerprint
        options["pseudo_label"] = teacher_name(teacher_arg)
    cfg = make_config(**options)
    output = Path(output) if output is not None else None
    ckpt_path = Path(checkpoint) if checkpoint is not None else (checkpoint_path_for(output) if output else None)
    if resume and ckpt_path is None:
        raise UsageError("resume needs the output path (its checkpoint is OUT.ckpt.pt)")
    if resume and not ckpt_path.exists():  # type: ignore[union-attr]
        raise UsageError(f"nothing to resume: no checkpoint at '{ckpt_path}'")
    if output is not None and output.exists() and not (force or resume):
        raise UsageError(f"'{output}' exists; pass --force to overwrite it")
    if output is not None and output.is_dir():
        raise UsageError(f"'{output}' is a directory; give a file name such as model.safetensors")
    if ckpt_path is not None and ckpt_path.exists() and not resume and not force:
        raise UsageError(f"a checkpoint of an unfinished run exists at '{ckpt_path}'; pass --resume to continue it "
                         "or --force to start over")
    dataset = _resolve_data(data, model, download)
    if cfg.val_n >= len(dataset):
        raise UsageError(f"--val-n {cfg.val_n} leaves no training data ({len(dataset)} examples); lower it")
    teacher = load_teacher(teacher_arg, trust_code=trust_code) if teacher_arg is not None else None
    with tracking.Session(tracker, run_name=output.stem if output else None) as tracked, session(device) as dist:
        events = ev.Events(tracking.TrackerSink(tracked), ev.Callbacks(on_epoch=callback),
                           ev.Terminal() if progress and dist.is_main else None)
        events.emit(ev.Record("settings", {"model": model.spec,
                                           "data": str(getattr(data, "spec", data)), **cfg.as_dict()}))
        result = _run(model, dataset, cfg, output=output, ckpt_path=ckpt_path, resume=resume, dist=dist,
                      events=events, curves=curves, teacher=teacher, download=download)
        val = result.provenance.finetune.validation
        events.emit(ev.Record("figures", {f"kept_{k}": v for k, v in (("clean_acc", val.clean_acc),
                                                                      ("robust_acc", val.robust_acc))
                                          if v is not None}))
        events.emit(ev.ArtifactWritten(output))
        events.emit(ev.ArtifactWritten(curves_path_for(output) if output else None))
    return result


def _extra_source(cfg: FinetuneConfig, dataset: ImageDataset, data: TrainData, teacher: Teacher | None, *,
                  device: torch.device, dist: DistSession, workers: int, download: bool) -> ExtraData | None:
    """The run's extra data (checked, pseudo-labelled), or None without ``extra_data``."""
    if not cfg.extra_data:
        return None
    assert cfg.extra_fraction is not None
    return load_extra(cfg.extra_data, dataset, data.image_shape, fraction=cfg.extra_fraction,
                      batch_size=cfg.batch_size, seed=cfg.seed, rank=dist.rank, world=dist.world, device=device,
                      workers=workers, teacher=teacher, download=download)


def _split(n: int, cfg: FinetuneConfig) -> tuple[list[int], list[int]]:
    """Held-out validation indices and training indices of the training split (seeded, disjoint)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(cfg.seed, "split") % 2**31)).tolist()
    val, train = sorted(perm[: cfg.val_n]), perm[cfg.val_n:]
    if cfg.train_n is not None:
        train = train[: cfg.train_n]
    return val, sorted(train)


def _run(model: HardenedModel, dataset: ImageDataset, cfg: FinetuneConfig, *, output: Path | None,
         ckpt_path: Path | None, resume: bool, dist: DistSession, events: ev.Events, curves: bool,
         teacher: Teacher | None = None, download: bool = False) -> HardenedModel:
    start_time = time.perf_counter()
    device = dist.device
    workers = _default_workers() if cfg.workers is None else cfg.workers
    fingerprint = {
        "recipe": _provenance_for_fingerprint(model),  # the key checkpoints of 0.1.0 hold
        "weights": state_digest(model),
        "data": dataset.spec,
        "config": {k: v for k, v in cfg.as_dict().items() if k not in _NOT_FINGERPRINTED},
        "world_size": dist.world,
    }
    if teacher is not None:
        fingerprint["teacher"] = teacher.digest
    store = checkpoint_store(ckpt_path) if ckpt_path is not None else None
    ckpt = None
    if resume:
        assert store is not None
        ckpt = store.load()
        if ckpt is None:
            raise UsageError(f"nothing to resume: no checkpoint at '{ckpt_path}'")
        diffs = _fingerprint_diff(json.loads(ckpt["fingerprint"]), as_json(fingerprint))
        if diffs:
            raise HardenError(f"checkpoint '{ckpt_path}' comes from a different run: {'; '.join(diffs[:6])}; "
                              "resume with the same model, data and settings, or start over with --force")
    work = copy.deepcopy(model)
    val_idx, train_idx = _split(len(dataset), cfg)
    skipped: list[str] = []
    if cfg.skip_bad_images:  # leave damaged images out of both sets, and count them in the entry
        val_idx, bad_val = dataset.readable(val_idx)
        train_idx, bad_train = dataset.readable(train_idx)
        skipped = bad_val + bad_train
    data = TrainData(dataset, train_idx, batch_size=cfg.batch_size - cfg.extra_per_batch(), device=device, dist=dist,
                     seed=cfg.seed, workers=workers, cache_limit_gb=cfg.cache_limit_gb)
    if len(data.order(0)) < 2:
        raise UsageError(f"only {len(train_idx)} training examples per process; use more data")
    extra = _extra_source(cfg, dataset, data, teacher, device=device, dist=dist, workers=workers, download=download)
    if val_idx:
        xv, yv = _decode(dataset, val_idx, workers)
        x_val, y_val = xv.to(device), yv.to(device)
    trainer = Trainer(work, cfg, device=device, dist=dist)
    iters = len(data)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"epoch": None, "score": -1.0, "clean": None, "robust": None, "state": None}
    start_epoch, bad_epochs, bn_seen = 0, 0, 0
    if ckpt is not None:
        trainer.model.load_state_dict(ckpt["model"])
        trainer.optimizer.load_state_dict(ckpt["optimizer"])
        if trainer.ema is not None and ckpt.get("ema") is not None:
            trainer.ema.load_state_dict(ckpt["ema"])
        if trainer.penalty is not None and ckpt.get("lipschitz") is not None:
            trainer.penalty.load_state_dict(ckpt["lipschitz"])
        history = list(json.loads(ckpt["history"]))
        best = dict(ckpt["best"])
        if best.get("state") is not None:
            best["state"] = {k: v.to(device) for k, v in best["state"].items()}
        start_epoch, bad_epochs, bn_seen = int(ckpt["epoch"]), int(ckpt["bad_epochs"]), int(ckpt["bn_seen"])
    elif cfg.bn_recalib:
        bn_seen = recalibrate_bn(trainer.model, data.clean_batches(cfg.bn_recalib_n))
        if trainer.ema is not None:
            trainer.ema = EMA(trainer.model, cfg.ema_decay)

    select_on = "clean" if cfg.method == "clean" else "robust"
    stopped_early = False
    for epoch in range(start_epoch, cfg.epochs):
        if cfg.patience is not None and bad_epochs >= cfg.patience:
            stopped_early = True
            break
        trainer.reseed(epoch)
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.float64, device=device)
        seen = 0
        events.emit(ev.ProgressStarted(iters, f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", keep=True))
        eps_now = cfg.eps
        for i, (xb, yb) in enumerate(data.batches(epoch)):
            if extra is not None:  # the same share of extra examples in every batch
                xe, ye = extra.take(epoch * iters + i)
                xb, yb = torch.cat([xb, xe]), torch.cat([yb, ye])
            done = epoch + (i + 1) / iters
            eps_now = eps_at(cfg, done)
            lr = lr_at(cfg, (epoch * iters + i) / (cfg.epochs * iters))
            loss_b, correct_b = trainer.train_step(xb, yb, eps=eps_now, lr=lr)
            loss_sum += loss_b
            correct += correct_b
            seen += yb.shape[0]
            shown = None
            if (i + 1) % cfg.log_every == 0 or i + 1 == iters:
                flag = torch.tensor([0.0 if torch.isfinite(loss_sum) else 1.0], device=device)
                if dist.all_sum(flag).item() > 0:
                    events.emit(ev.ProgressEnded())
                    raise NonFiniteLoss(_nonfinite_message(epoch, i, ckpt_path, start_epoch, history))
                shown = {"loss": f"{loss_sum.item() / seen:.3f}", "acc": f"{100 * correct.item() / seen:.1f}%",
                         "lr": f"{lr:.3g}"}
                if cfg.method != "clean":
                    shown["eps"] = f"{eps_now * 255:.2f}/255"
            events.emit(ev.ProgressMade(1, status=shown))
        totals = dist.all_sum(torch.stack([loss_sum, correct, torch.tensor(float(seen), dtype=torch.float64,
                                                                           device=device)]))
        entry: dict[str, Any] = {
            "epoch": epoch + 1, "loss": totals[0].item() / totals[2].item(),
            "train_acc": 100 * totals[1].item() / totals[2].item(), "lr": lr_at(cfg, (epoch + 1) / cfg.epochs),
            "eps": eps_now, "val_clean": None, "val_robust": None,
        }
        if val_idx:
            entry["val_clean"], entry["val_robust"] = trainer.validate(x_val, y_val)
            events.emit(ev.ProgressMade(0, status={"loss": f"{entry['loss']:.3f}",
                                                   "clean": f"{entry['val_clean']:.1f}%",
                                                   "robust": f"{entry['val_robust']:.1f}%"}))
            score = entry["val_clean"] if select_on == "clean" else entry["val_robust"]
            if score > best["score"]:
                best = {"epoch": epoch + 1, "score": score, "clean": entry["val_clean"], "robust": entry["val_robust"],
                        "state": {k: v.detach().clone() for k, v in trainer.eval_model().state_dict().items()}}
                bad_epochs = 0
            else:
                bad_epochs += 1
        entry["seconds"] = round(time.perf_counter() - t0, 3)
        events.emit(ev.ProgressEnded())
        history.append(entry)
        if store is not None and dist.is_main:
            store.save({
                "format": CHECKPOINT_FORMAT,
                "fingerprint": json.dumps(fingerprint, sort_keys=True),
                "epoch": epoch + 1,
                "model": trainer.model.state_dict(),
                "optimizer": trainer.optimizer.state_dict(),
                "ema": trainer.ema.state_dict() if trainer.ema is not None else None,
                "lipschitz": trainer.penalty.state_dict() if trainer.penalty is not None else None,
                "best": {**best, "state": ({k: v.cpu() for k, v in best["state"].items()}
                                           if best.get("state") is not None else None)},
                "history": json.dumps(history),
                "bad_epochs": bad_epochs,
                "bn_seen": bn_seen,
            })
        events.emit(ev.Record("epoch", dict(entry)))

    # the weights to keep, back on the CPU in fp32 and the default layout
    final = trainer.eval_model()
    kept_epoch = history[-1]["epoch"] if history else 0
    if cfg.keep == "best" and best.get("state") is not None:
        final.load_state_dict(best["state"])
        kept_epoch = int(best["epoch"])
    result = copy.deepcopy(model)
    result.load_state_dict({k: v.detach().cpu() for k, v in final.state_dict().items()})
    result.eval()
    kept = next((h for h in history if h["epoch"] == kept_epoch), history[-1] if history else {})
    entry = {
        "method": cfg.method,
        "norm": cfg.norm,
        "eps": cfg.eps,
        "steps": 1 if cfg.method == "fgsm-rs" else (0 if cfg.method == "clean" else cfg.steps),
        "step_size": cfg.resolved_step_size(),
        "beta": cfg.beta if cfg.method in PAIRED else None,
        "awp": ({"gamma": cfg.awp, "warmup": cfg.resolved_awp_warmup(), "paper": "Wu et al. 2020"}
                if cfg.awp > 0 else None),
        "extra_data": extra.info if extra is not None else None,
        "epochs": cfg.epochs,
        "epochs_run": len(history),
        "stopped_early": stopped_early,
        "kept": cfg.keep,
        "kept_epoch": kept_epoch,
        "lr": cfg.lr,
        "schedule": cfg.schedule,
        "batch_size": cfg.batch_size,
        "world_size": dist.world,
        "weight_decay": cfg.weight_decay,
        "momentum": cfg.momentum,
        "ema": cfg.ema_decay if cfg.ema else None,
        "label_smoothing": cfg.label_smoothing,
        "eps_warmup": cfg.eps_warmup,
        "attack_mode": cfg.attack_mode,
        "bn_recalibrated_on": bn_seen,
        "augment": cfg.augment,
        "lipschitz_reg": cfg.lipschitz_reg or None,
        "precision": "bf16" if trainer.bf16 else "fp32",
        "seed": cfg.seed,
        "data": dataset.spec,
        "train_n": len(train_idx),
        "skipped_images": len(skipped),
        "validation": {"n": len(val_idx), "attack": f"pgd-{cfg.val_steps}", "eps": cfg.eps, "norm": cfg.norm,
                       "clean_acc": kept.get("val_clean"), "robust_acc": kept.get("val_robust")},
        "history": history,
        "seconds": round(time.perf_counter() - start_time, 2),
        "device": device_text(device, detail=False),
    }
    result.provenance.record_finetune(FinetuneEntry.from_dict(entry, "finetune"))
    if dist.is_main and output is not None:
        save(result, output, overwrite=True)
        if curves and history:
            write_curves(curves_path_for(output), history, best_epoch=kept_epoch,
                         title=f"{result.spec}: {cfg.method} eps {cfg.eps * 255:.3g}/255")
        if store is not None:
            store.remove()
    dist.barrier()
    return result


def _nonfinite_message(epoch: int, step: int, ckpt_path: Path | None, start_epoch: int,
                       history: list[dict[str, Any]]) -> str:
    where = f"the training loss became non-finite in epoch {epoch + 1} (by step {step + 1}); stopped"
    if ckpt_path is not None and history:
        return (f"{where}. The last good checkpoint is '{ckpt_path}' (after epoch {history[-1]['epoch']}); "
                "lower --lr (or check the data) and continue with --resume, or start over with --force")
    return f"{where} before any checkpoint was written; lower --lr or check the data"



