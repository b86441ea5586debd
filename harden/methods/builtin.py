"""harden's built-in training methods: PGD-AT, TRADES, FGSM-RS, clean training and MART."""

from __future__ import annotations

from typing import TYPE_CHECKING

from harden.methods.base import TrainingMethod, register_method

if TYPE_CHECKING:
    import torch


class PGD(TrainingMethod):
    """PGD adversarial training (Madry et al. 2018): cross-entropy on PGD-k examples from a uniform start."""

    name, label = "pgd", "PGD-AT (Madry et al. 2018)"
    awp_gamma, awp_warmup = 1e-2, 0


class FGSMRS(PGD):
    """FGSM from a random start (Wong et al. 2020): one step of 1.25 eps, projected to the eps ball."""

    name, label = "fgsm-rs", "FGSM-RS (Wong et al. 2020)"
    fixed_steps = 1
    awp_gamma = None

    def step_size(self, eps: float, steps: int) -> float:
        return 1.25 * eps


class Trades(TrainingMethod):
    """TRADES (Zhang et al. 2019): CE on clean inputs plus beta KL(clean || adversarial), KL-PGD inside from
    a 0.001-Gaussian start."""

    name, label = "trades", "TRADES (Zhang et al. 2019)"
    paired, uses_beta = True, True
    awp_gamma, awp_warmup = 5e-3, 10
    inner_loss, inner_start = "kl", "gaussian"

    def loss(self, logits_adv: torch.Tensor, y: torch.Tensor, *, logits_nat: torch.Tensor | None, beta: float,
             label_smoothing: float) -> torch.Tensor:
        from harden.training.losses import trades_loss

        return trades_loss(_clean_logits(self, logits_adv, logits_nat), logits_adv, y, beta=beta,
                           label_smoothing=label_smoothing)


class Mart(Trades):
    """MART (Wang et al. 2020): boosted CE on adversarial inputs plus a KL weighted toward misclassified ones;
    CE-PGD inside from a 0.001-Gaussian start, as MART's code."""

    name, label = "mart", "MART (Wang et al. 2020)"
    inner_loss = "ce"

    def loss(self, logits_adv: torch.Tensor, y: torch.Tensor, *, logits_nat: torch.Tensor | None, beta: float,
             label_smoothing: float) -> torch.Tensor:
        from harden.training.losses import mart_loss

        return mart_loss(_clean_logits(self, logits_adv, logits_nat), logits_adv, y, beta=beta,
                         label_smoothing=label_smoothing)


def _clean_logits(method: TrainingMethod, logits_adv: torch.Tensor, logits_nat: torch.Tensor | None) -> torch.Tensor:
    """The clean logits a paired loss needs (a one-logit model refused first)."""
    from harden.attacks import check_logits

    check_logits(logits_adv)
    if logits_nat is None:
        raise ValueError(f"{method.name} needs the clean logits")
    return logits_nat


class Clean(TrainingMethod):
    """Training without attacks (cross-entropy on clean inputs): the pre-training of a start network."""

    name, label = "clean", "clean training (no attack)"
    attacks = False
    searchable = False


for _method in (PGD(), Trades(), FGSMRS(), Clean(), Mart()):
    register_method(_method)
