"""APGD-CE from the official AutoAttack code (pyautoattack), for the checks and validations that need a strong
attack on a few images without a whole AutoAttack run."""

from __future__ import annotations

import torch
from torch import nn


def apgd_ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str, iterations: int,
            seed: int) -> torch.Tensor:
    """pyautoattack's APGD-CE (one restart) on ``x``; the caller's random generators are left as they were.

    Points ``model`` already misclassifies come back unchanged, as AutoAttack returns them.

    >>> x_adv = apgd_ce(model, x, y, eps=8 / 255, norm="Linf", iterations=25, seed=0)  # doctest: +SKIP
    """
    from pyautoattack.autopgd_base import APGDAttack

    cuda = [x.device.index or 0] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), torch.enable_grad():  # APGD seeds the global generators
        return APGDAttack(model, n_iter=iterations, norm=norm, n_restarts=1, eps=eps, seed=seed, loss="ce",
                          device=x.device).perturb(x, y)
