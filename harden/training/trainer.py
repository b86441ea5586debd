"""The training step of fine-tuning: :class:`Trainer` holds the model, optimizer, attack and validation."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from harden.attacks import check_logits
from harden.attacks.apgd import apgd_ce
from harden.lipschitz import SpectralPenalty
from harden.methods import get_method
from harden.model import HardenedModel
from harden.runtime.modes import eval_mode
from harden.runtime.session import DistSession
from harden.schemas.finetune import FinetuneConfig
from harden.seeding import derive_seed
from harden.training.augment import augment, strong_augment, strong_policy
from harden.training.awp import WeightPerturbation
from harden.training.ema import EMA
from harden.training.inner_attack import frozen, perturb


class _Pair(nn.Module):
    """Clean and adversarial logits in one call, so TRADES and MART are one forward for DistributedDataParallel."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, x_adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(x), self.model(x_adv)


def _lipschitz_penalty(model: nn.Module, seed: int) -> Any:
    """The ``--lipschitz-reg`` term: a seeded :class:`harden.lipschitz.SpectralPenalty` of ``model``."""
    return SpectralPenalty(model, seed=seed)


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
        self.policy = strong_policy() if cfg.augment == "strong" else None
        gen_device = device if device.type == "cuda" else torch.device("cpu")
        self.generator = torch.Generator(device=gen_device)
        self.generator.manual_seed(cfg.seed)
        self.method = get_method(cfg.method)
        self.attack_model: nn.Module = self.model
        objective: nn.Module = _Pair(self.model) if self.method.paired else self.model
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
        self.raw_objective: nn.Module = _Pair(self.attack_model) if self.method.paired else self.attack_model
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
        if self.policy is not None:  # seeded through torch's generator (reseed sets it per epoch)
            x_u8 = strong_augment(x_u8, self.policy)
        if self.cfg.augment != "none":
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
        if self.method.attacks and eps > 0:
            if cfg.attack_mode == "eval":
                self.model.eval()
            else:
                self.model.train()
            with frozen(self.params), self.autocast():
                x_adv = self.method.perturb(self.attack_model, x, y, eps=eps, step=self.step_size * eps / cfg.eps,
                                            steps=self.method.steps(cfg.steps), norm=cfg.norm,
                                            generator=self.generator, options=cfg.method_options())
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
        return self.awp is not None and self.method.attacks and self.epoch >= self.cfg.resolved_awp_warmup()

    def loss(self, net: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """The method's loss (fp32) and the logits of the trained inputs, with ``net`` (a model or its pair)."""
        cfg = self.cfg
        with self.autocast():
            if self.method.paired:
                logits_nat, logits = (t.float() for t in net(x, x_adv))
            else:
                logits_nat, logits = None, net(x_adv).float()
            check_logits(logits)
            loss = self.method.loss(logits, y, logits_nat=logits_nat, beta=cfg.beta,
                                    label_smoothing=cfg.label_smoothing)
        return loss, logits

    def eval_model(self) -> nn.Module:
        """The weights that are validated and kept: the EMA copy when asked for, else the trained model."""
        return self.ema.module if self.ema is not None else self.model

    def validate(self, x_val: torch.Tensor, y_val: torch.Tensor) -> tuple[float, float]:
        """Clean and robust accuracy in % (fp32, eval mode; ``val_attack`` at the full eps: PGD with step eps/4,
        or APGD-CE) on this process's shard of the validation slice, summed over processes."""
        cfg = self.cfg
        model = self.eval_model()
        gen = torch.Generator(device=self.generator.device).manual_seed(derive_seed(cfg.seed, "validation"))
        shard = torch.arange(self.dist.rank, x_val.shape[0], self.dist.world)
        counts = torch.zeros(3, dtype=torch.float64, device=self.device)
        with eval_mode(model):
            for i in range(0, shard.numel(), max(1, cfg.batch_size)):
                idx = shard[i:i + cfg.batch_size].to(x_val.device)
                xb = x_val.index_select(0, idx).float().div_(255).contiguous(memory_format=self.memory_format)
                yb = y_val.index_select(0, idx)
                with torch.no_grad():
                    clean = (model(xb).argmax(1) == yb).sum()
                x_adv = self._validation_attack(model, xb, yb, gen, i)
                with torch.no_grad():
                    robust = (model(x_adv).argmax(1) == yb).sum()
                counts += torch.stack([clean.double(), robust.double(), torch.tensor(float(yb.numel()),
                                                                                     device=self.device)])
        counts = self.dist.all_sum(counts)
        total = max(1.0, counts[2].item())
        return 100 * counts[0].item() / total, 100 * counts[1].item() / total

    def _validation_attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator,
                           batch: int) -> torch.Tensor:
        """The validation attack's images for one batch (``batch``: its offset, which seeds APGD)."""
        cfg = self.cfg
        steps = cfg.resolved_val_steps()
        with frozen(list(model.parameters())):
            if cfg.val_attack == "apgd-ce":
                seed = derive_seed(cfg.seed, "validation", self.dist.rank, batch) % (2 ** 31)
                return apgd_ce(model, x, y, eps=cfg.eps, norm=cfg.norm, iterations=steps, seed=seed)
            return perturb(model, x, y, eps=cfg.eps, step=cfg.eps / 4, steps=steps, norm=cfg.norm, generator=gen)

    def reseed(self, epoch: int) -> None:
        """Seed every random draw of ``epoch`` (augmentation, attack starts, dropout) from (seed, epoch, rank)."""
        s = derive_seed(self.cfg.seed, epoch, self.dist.rank)
        self.epoch = epoch
        self.generator.manual_seed(s)
        torch.manual_seed(s)
