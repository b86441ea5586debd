"""harden's built-in training methods: PGD-AT, TRADES, FGSM-RS, clean training and MART."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harden.methods.base import TrainingMethod, register_method

if TYPE_CHECKING:
    import torch
    from torch import nn


class PGD(TrainingMethod):
    """PGD adversarial training (Madry et al. 2018): cross-entropy on PGD-k examples from a uniform start."""

    name, label = "pgd", "PGD-AT (Madry et al. 2018)"
    awp_gamma, awp_warmup = 1e-2, 0

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, step: float, steps: int,
                norm: str, generator: torch.Generator, options: dict[str, Any]) -> torch.Tensor:
        from harden.training.inner_attack import perturb

        return perturb(model, x, y, kind="pgd", eps=eps, step=step, steps=steps, norm=norm, generator=generator)


class FGSMRS(PGD):
    """FGSM from a random start (Wong et al. 2020): one step of 1.25 eps, projected to the eps ball."""

    name, label = "fgsm-rs", "FGSM-RS (Wong et al. 2020)"
    fixed_steps = 1
    awp_gamma = None

    def step_size(self, eps: float, steps: int) -> float:
        return 1.25 * eps

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, step: float, steps: int,
                norm: str, generator: torch.Generator, options: dict[str, Any]) -> torch.Tensor:
        from harden.training.inner_attack import perturb

        return perturb(model, x, y, kind="fgsm-rs", eps=eps, step=step, steps=1, norm=norm, generator=generator)


class Trades(TrainingMethod):
    """TRADES (Zhang et al. 2019): CE on clean inputs plus beta KL(clean || adversarial), KL-PGD inside."""

    name, label = "trades", "TRADES (Zhang et al. 2019)"
    paired, uses_beta = True, True
    awp_gamma, awp_warmup = 5e-3, 10

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, step: float, steps: int,
                norm: str, generator: torch.Generator, options: dict[str, Any]) -> torch.Tensor:
        from harden.training.inner_attack import perturb

        return perturb(model, x, y, kind=self.name, eps=eps, step=step, steps=steps, norm=norm, generator=generator)

    def loss(self, logits_adv: torch.Tensor, y: torch.Tensor, *, logits_nat: torch.Tensor | None, beta: float,
             label_smoothing: float) -> torch.Tensor:
        from harden.training.losses import method_loss

        return method_loss(self.name, logits_adv, y, logits_nat=logits_nat, beta=beta,
                           label_smoothing=label_smoothing)


class Mart(Trades):
    """MART (Wang et al. 2020): boosted CE on adversarial inputs plus a KL weighted toward misclassified ones."""

    name, label = "mart", "MART (Wang et al. 2020)"


class Clean(TrainingMethod):
    """Training without attacks (cross-entropy on clean inputs): the pre-training of a start network."""

    name, label = "clean", "clean training (no attack)"
    attacks = False
    searchable = False


for _method in (PGD(), Trades(), FGSMRS(), Clean(), Mart()):
    register_method(_method)
