"""The Optuna pruner that stops the trials falling behind, by its ``--pruner`` name."""

from __future__ import annotations

from typing import Any

from harden.errors import UsageError
from harden.schemas.search import PRUNERS


def make_pruner(name: str, epochs: int) -> Any:
    """The Optuna pruner called ``name`` (rungs at epochs 1, 3, 9, ...); ``none`` never prunes."""
    import optuna

    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UsageError(f"--pruner must be one of {', '.join(PRUNERS)}, got '{name}'")
