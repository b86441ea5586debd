"""The adversarial examples of a training step: PGD, FGSM from a random start, TRADES and MART starts."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from harden.attacks import l2_normalize, project


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def _random_start(x: torch.Tensor, eps: float, norm: str, gen: torch.Generator) -> torch.Tensor:
    if norm == "Linf":
        return (2 * torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) - 1) * eps
    d = l2_normalize(torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype))
    return d * _bcast(eps * torch.rand(x.shape[0], generator=gen, device=x.device, dtype=x.dtype), x)


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
    x = x.detach()
    if eps <= 0:
        return x
    if kind == "trades":
        with torch.no_grad():
            target = F.softmax(model(x).float(), dim=1)
        delta = 0.001 * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    elif kind == "mart":
        delta = 0.001 * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    else:
        delta = _random_start(x, eps, norm, generator)
        if kind == "fgsm-rs":
            steps = 1
    delta = ((x + delta).clamp(0, 1) - x).detach()
    for _ in range(steps):
        delta.requires_grad_(True)
        logits = model(x + delta).float()
        if kind == "trades":
            loss = F.kl_div(F.log_softmax(logits, dim=1), target, reduction="sum")
        else:
            loss = F.cross_entropy(logits, y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta = delta + step * (grad.sign() if norm == "Linf" else l2_normalize(grad))
            delta = project(delta, eps, norm)
            delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()
