"""The Optuna pruner that stops the trials falling behind, by its ``--pruner`` name."""

from __future__ import annotations

import math
from typing import Any

from harden.errors import UsageError
from harden.schemas.search import PRUNERS


def first_rung(eps_warmup: float) -> int:
    """The first epoch a trial may be judged at: the first one trained at full eps after the warm-up.

    During the eps warm-up robust accuracy measures how far the ramp has come, not the candidate, so no
    trial is compared there (epoch 1 with no warm-up, epoch 2 with harden's default of one epoch).
    """
    return math.ceil(eps_warmup) + 1 if eps_warmup > 0 else 1


def make_pruner(name: str, epochs: int, eps_warmup: float = 0.0) -> Any:
    """The Optuna pruner called ``name`` (rungs at epochs r, 3r, 9r, ... from the first rung r after the eps
    warm-up); ``none`` never prunes."""
    import optuna

    rung = first_rung(eps_warmup)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=rung, reduction_factor=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=rung, max_resource=max(epochs, rung), reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=rung)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UsageError(f"--pruner must be one of {', '.join(PRUNERS)}, got '{name}'")
