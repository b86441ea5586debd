"""The catastrophic-overfitting guard: robustness to PGD collapsing while the training attack's accuracy rises.

Single-step adversarial training (FGSM-RS above all) can overfit to its own attack within an epoch:
accuracy against the training attack climbs while accuracy against a multi-step attack falls to near
zero (Wong et al. 2020; de Jorge et al. 2022). harden validates every epoch with PGD on held-out
training images, so the rule reads the curve it already has:

    epoch e has collapsed when its validation PGD accuracy is below half of the best earlier epoch's,
    the fall is at least 10 points and at least 4 standard errors of that best on the n held-out
    images (so the noise of a small validation set never fires it), and the training attack's
    accuracy of epoch e is above that best epoch's.

``--on-collapse stop`` (the default) ends the run there and keeps the best epoch; ``warn`` says so and
trains on; ``ignore`` says nothing. Either way the epoch is marked in the history and the model file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from harden.schemas.finetune import ON_COLLAPSE  # noqa: F401  (the choices of --on-collapse)

#: the rule's constants: the fall (a fraction of the best), its least size in points and in standard errors
COLLAPSE_FRACTION, COLLAPSE_POINTS, COLLAPSE_ERRORS = 0.5, 10.0, 4.0


def least_fall(best: float, n: int | None) -> float:
    """The smallest fall from ``best`` (%) that the rule counts: 10 points, or 4 standard errors on n images."""
    if not n:
        return COLLAPSE_POINTS
    return max(COLLAPSE_POINTS, COLLAPSE_ERRORS * math.sqrt(max(best * (100 - best), 1.0) / n))


def collapse_of(history: Sequence[dict[str, Any]], entry: dict[str, Any], n: int | None = None
                ) -> dict[str, Any] | None:
    """The collapse ``entry`` (this epoch, validated on ``n`` images) shows against the earlier ``history``."""
    if entry.get("val_robust") is None:
        return None
    earlier = [h for h in history if h.get("val_robust") is not None]
    if not earlier:
        return None
    best = max(earlier, key=lambda h: h["val_robust"])
    fall = best["val_robust"] - entry["val_robust"]
    if fall < least_fall(best["val_robust"], n):
        return None
    fell = entry["val_robust"] < COLLAPSE_FRACTION * best["val_robust"]
    rose = entry["train_acc"] > best["train_acc"]
    if not (fell and rose):
        return None
    return {"epoch": entry["epoch"], "val_robust": round(entry["val_robust"], 2),
            "train_acc": round(entry["train_acc"], 2), "best_epoch": best["epoch"],
            "best_val_robust": round(best["val_robust"], 2), "best_train_acc": round(best["train_acc"], 2)}


def collapse_message(c: dict[str, Any], action: str) -> str:
    """The one line that reports a collapse."""
    then = {"stop": f"stopped; keeping epoch {c['best_epoch']}", "warn": "training on (--on-collapse warn)"}[action]
    return (f"catastrophic overfitting in epoch {c['epoch']}: validation PGD accuracy fell to {c['val_robust']:.1f}% "
            f"from {c['best_val_robust']:.1f}% (epoch {c['best_epoch']}) while the training attack's accuracy rose "
            f"to {c['train_acc']:.1f}%; {then}. Try --method n-fgsm or pgd, or a smaller --eps")


def first_collapse(history: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The collapse recorded in a run's history (the first marked epoch), or None."""
    return next((h["collapse"] for h in history if h.get("collapse")), None)
