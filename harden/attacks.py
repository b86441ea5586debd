"""White-box attacks used for quick robustness checks and for adversarial training.

All attacks take a model mapping images in [0, 1] to logits and return adversarial images in
[0, 1] within the eps-ball (L-inf or L2) around ``x``. AutoAttack itself runs through the official
``pyautoattack`` code (see :mod:`harden.evaluation`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("Linf", "L2")


def margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Carlini-Wagner margin: best wrong logit minus the true logit, per example (to maximise)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.clone()
    other.scatter_(1, y[:, None], float("-inf"))
    return other.amax(1) - true


def _loss(name: str, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if name == "ce":
        return F.cross_entropy(logits, y, reduction="sum")
    if name == "cw":
        return margin_loss(logits, y).sum()
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


def _random_start(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None) -> torch.Tensor:
    if norm == "Linf":
        r = torch.rand(x.shape, generator=generator, device="cpu").to(x.device)
        return (2 * r - 1) * eps
    r = torch.randn(x.shape, generator=generator, device="cpu").to(x.device)
    r = l2_normalize(r)
    radius = torch.rand(x.shape[0], generator=generator, device="cpu").to(x.device)
    return r * (eps * radius).view(-1, *([1] * (x.dim() - 1)))


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int = 20,
        step_size: float | None = None, norm: str = "Linf", loss: str = "ce", random_start: bool = True,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """Projected gradient ascent on ``loss`` (``ce`` or ``cw`` margin); step defaults to eps/4."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}")
    step = eps / 4 if step_size is None else step_size
    x = x.detach()
    delta = _random_start(x, eps, norm, generator) if random_start else torch.zeros_like(x)
    delta = ((x + delta).clamp(0, 1) - x).detach()
    for _ in range(steps):
        delta.requires_grad_(True)
        value = _loss(loss, model(x + delta), y)
        (grad,) = torch.autograd.grad(value, delta)
        with torch.no_grad():
            delta = delta + step * (grad.sign() if norm == "Linf" else l2_normalize(grad))
            delta = project(delta, eps, norm)
            delta = (x + delta).clamp(0, 1) - x
        delta = delta.detach()
    return (x + delta).detach()


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


ATTACKS: dict[str, str] = {
    "autoattack": "AutoAttack standard (pyautoattack): APGD-CE, APGD-T, FAB-T, Square; --fast: APGD-CE, APGD-T",
    "apgd-ce": "APGD on cross-entropy alone, with AutoAttack's standard settings (pyautoattack)",
    "pgd": "PGD-20 on cross-entropy, step eps/4, random start (quick check)",
    "fgsm": "one gradient-sign step of size eps (quick check, weak)",
    "cw": "PGD-20 on the Carlini-Wagner margin loss, step eps/4 (quick check)",
}


def list_attacks() -> dict[str, str]:
    """Attack names accepted by ``harden evaluate --attack``, with a one-line description each."""
    return dict(ATTACKS)
