"""Gradient attacks: one projected-gradient core, and PGD, FGSM and CW built on it.

All attacks take a model mapping images in [0, 1] to logits and return adversarial images in
[0, 1] within the eps-ball (L-inf or L2) around ``x``. The core is parameterised by the loss it
ascends (cross-entropy, the Carlini-Wagner margin, or TRADES' KL divergence to the clean prediction)
and by how it starts (a uniform draw in the ball, made on the device or on the CPU; a small Gaussian;
or zero), so evaluation's quick attacks and training's inner attacks share one loop.
AutoAttack itself runs through the official ``pyautoattack`` code (see :mod:`harden.evaluation`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from harden.errors import UsageError
from harden.schemas.fields import NORMS

LOSSES = ("ce", "cw", "kl")
STARTS = ("uniform", "uniform-cpu", "gaussian", "zero")
GAUSSIAN_START_STD = 0.001  # TRADES' and MART's start
ONE_LOGIT = ("the model returns one output per image (a sigmoid score?); attacks and losses need one logit per "
             "class: wrap it to return torch.cat([-z / 2, z / 2], dim=1), whose softmax is [1 - sigmoid(z), "
             "sigmoid(z)]")


def check_logits(logits: torch.Tensor) -> int:
    """The number of classes of (batch, classes) ``logits``; a :class:`UsageError` for a single output."""
    if logits.dim() == 1 or (logits.dim() == 2 and logits.shape[1] == 1):
        raise UsageError(ONE_LOGIT)
    return int(logits.shape[-1])


def margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Carlini-Wagner margin: best wrong logit minus the true logit, per example (to maximise)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.clone()
    other.scatter_(1, y[:, None], float("-inf"))
    return other.amax(1) - true


def _loss(name: str, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    check_logits(logits)
    if name == "ce":
        return F.cross_entropy(logits, y, reduction="sum")
    if name == "cw":
        return margin_loss(logits, y).sum()
    if name == "kl" and target is not None:
        return F.kl_div(F.log_softmax(logits, dim=1), target, reduction="sum")
    raise ValueError(f"unknown attack loss '{name}'")


def l2_normalize(g: torch.Tensor) -> torch.Tensor:
    """Scale each example of ``g`` to unit L2 norm."""
    norm = g.flatten(1).norm(dim=1).clamp_min(1e-12)
    return g / norm.view(-1, *([1] * (g.dim() - 1)))


def project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project perturbations onto the eps-ball of ``norm``."""
    if norm == "Linf":
        return delta.clamp(-eps, eps)
    n = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
    factor = (eps / n).clamp(max=1.0)
    return delta * factor.view(-1, *([1] * (delta.dim() - 1)))


def _uniform_start(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None,
                   on_cpu: bool) -> torch.Tensor:
    """A random point of the eps-ball: drawn on the CPU then moved (``on_cpu``), or on ``x``'s device."""
    where: dict = {"device": "cpu"} if on_cpu else {"device": x.device, "dtype": x.dtype}
    if norm == "Linf":
        return (2 * torch.rand(x.shape, generator=generator, **where).to(x.device) - 1) * eps
    direction = l2_normalize(torch.randn(x.shape, generator=generator, **where).to(x.device))
    radius = torch.rand(x.shape[0], generator=generator, **where).to(x.device)
    return direction * (eps * radius).view(-1, *([1] * (x.dim() - 1)))


def _start(x: torch.Tensor, eps: float, norm: str, start: str, generator: torch.Generator | None) -> torch.Tensor:
    if start in ("uniform", "uniform-cpu"):
        return _uniform_start(x, eps, norm, generator, on_cpu=start == "uniform-cpu")
    if start == "gaussian":
        return GAUSSIAN_START_STD * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    if start == "zero":
        return torch.zeros_like(x)
    raise ValueError(f"unknown attack start '{start}' (use one of {STARTS})")


def pgd_core(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int, step: float,
             norm: str, loss: str = "ce", start: str = "uniform-cpu", generator: torch.Generator | None = None,
             float_logits: bool = False) -> torch.Tensor:
    """Projected gradient ascent on ``loss`` (``ce``, ``cw`` margin, or ``kl`` to the clean prediction)
    from ``start`` (``uniform``, ``uniform-cpu``, ``gaussian`` or ``zero``), ``steps`` steps of size ``step``.

    ``float_logits`` casts the logits to float32 before the loss (for attacks run under autocast).
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}")
    x = x.detach()
    target = None
    if loss == "kl":
        with torch.no_grad():
            target = F.softmax(model(x).float(), dim=1)
    delta = _start(x, eps, norm, start, generator)
    delta = ((x + delta).clamp(0, 1) - x).detach()
    for _ in range(steps):
        delta.requires_grad_(True)
        logits = model(x + delta)
        value = _loss(loss, logits.float() if float_logits else logits, y, target)
        (grad,) = torch.autograd.grad(value, delta)
        with torch.no_grad():
            delta = delta + step * (grad.sign() if norm == "Linf" else l2_normalize(grad))
            delta = project(delta, eps, norm)
            delta = (x + delta).clamp(0, 1) - x
        delta = delta.detach()
    return (x + delta).detach()


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int = 20,
        step_size: float | None = None, norm: str = "Linf", loss: str = "ce", random_start: bool = True,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """Projected gradient ascent on ``loss`` (``ce`` or ``cw`` margin); step defaults to eps/4."""
    if loss not in ("ce", "cw"):
        raise ValueError(f"unknown attack loss '{loss}'")
    step = eps / 4 if step_size is None else step_size
    return pgd_core(model, x, y, eps=eps, steps=steps, step=step, norm=norm, loss=loss,
                    start="uniform-cpu" if random_start else "zero", generator=generator)


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "Linf",
         random_start: bool = False, step_size: float | None = None,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """One gradient-sign step (with an optional random start, as in Wong et al.'s FGSM-RS)."""
    step = (1.25 * eps if random_start else eps) if step_size is None else step_size
    return pgd(model, x, y, eps=eps, steps=1, step_size=step, norm=norm, random_start=random_start,
               generator=generator)


def cw(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int = 20,
       step_size: float | None = None, norm: str = "Linf", random_start: bool = True,
       generator: torch.Generator | None = None) -> torch.Tensor:
    """PGD on the Carlini-Wagner margin loss (the usual "CW-k" of robustness papers)."""
    return pgd(model, x, y, eps=eps, steps=steps, step_size=step_size, norm=norm, loss="cw",
               random_start=random_start, generator=generator)
