"""The adversarial examples of a training step, on the attacks' PGD core (:func:`harden.attacks.pgd_core`):
PGD, FGSM from a random start, TRADES and MART starts."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from harden.attacks import pgd_core


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
