"""The adversarial examples of a training step, on the attacks' PGD core (:func:`harden.attacks.pgd_core`),
and the parameters frozen while they are computed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from harden.attacks import pgd_core


@contextlib.contextmanager
def frozen(params: Sequence[nn.Parameter]) -> Iterator[None]:
    """Parameters without gradients while an attack asks only for input gradients."""
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)


def perturb(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, step: float, steps: int, norm: str,
            generator: torch.Generator, loss: str = "ce", start: str = "uniform") -> torch.Tensor:
    """Adversarial examples for training: ``steps`` PGD steps on ``loss`` (``ce``, or ``kl`` to the clean
    prediction) from a ``start`` (``uniform`` in the eps ball, or ``gaussian``: 0.001 noise, as TRADES' and
    MART's code). A training method names its own (:class:`harden.methods.TrainingMethod`).

    The model's mode is left as the caller set it; run it under autocast for bf16 attacks.
    """
    if eps <= 0:
        return x.detach()
    return pgd_core(model, x, y, eps=eps, steps=steps, step=step, norm=norm, loss=loss, start=start,
                    generator=generator, float_logits=True)
