"""Checks that keep a robustness number honest.

Each failed check becomes a named warning in the evaluation report (and on the terminal); nothing is
hidden and nothing stops the run. AutoAttack's own checks log to the ``auto-attack`` logger and are
captured by :func:`capture_autoattack`; harden adds checks on the model's mode, buffers and input
normalization, the input range, the outputs, the input gradients and the behaviour of the attack as
it gets stronger. :mod:`~harden.evaluation.checking` runs them before and after an evaluation's attacks.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harden.attacks.apgd import apgd_ce

AUTOATTACK_LOGGER = "auto-attack"
# what to do when two clean passes of the same images disagree
RAND_HINT = ("harden: evaluate a randomized model with --version rand (AutoAttack's version for randomized "
             "defenses: APGD-CE and APGD-DLR, each gradient averaged over 20 draws).")

# AutoAttack's warnings have no names of their own: name them by what their text says.
_AA_NAMES = (
    ("randomized defense", "randomized-defense"),
    ("probability distribution", "softmax-output"),
    ("dynamic defense", "dynamic-defense"),
    ("Square Attack has decreased", "square-beats-white-box"),
    ("zero gradient", "zero-gradients"),
    ("target classes", "too-few-classes"),
    ("not possible to use", "too-few-classes"),
)

VANISHING_GRAD = 1e-8  # per-example L2 norm of d(cross-entropy)/d(input) below this counts as vanishing
NORMALIZATION_IMAGES = 64  # the normalization check classifies at most this many images per candidate
NORMALIZATION_GAIN = 10.0  # another normalization must gain at least this many points of clean accuracy
NORMALIZATION_P = 0.01     # ... and an exact paired (McNemar) test must give a p-value below this


@dataclass
class CheckWarning:
    """One failed check: a stable ``name``, a one-line ``message`` and who raised it."""

    name: str
    message: str
    source: str = "harden"
    count: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "message": self.message, "source": self.source, "count": self.count}

    def line(self) -> str:
        times = f" (x{self.count})" if self.count > 1 else ""
        return f"warning [{self.source}:{self.name}]{times}: {self.message}"


class WarningLog:
    """Warnings in the order they first happened, repeats counted rather than listed."""

    def __init__(self, items: Sequence[dict[str, Any] | CheckWarning] = ()) -> None:
        self._items: dict[tuple[str, str, str], CheckWarning] = {}
        for item in items:
            if isinstance(item, dict):
                item = CheckWarning(item["name"], item["message"], item.get("source", "harden"),
                                    int(item.get("count", 1)))
            self.add(item.name, item.message, item.source, item.count)

    def add(self, name: str, message: str, source: str = "harden", count: int = 1) -> None:
        key = (source, name, message)
        if key in self._items:
            self._items[key].count += count
        else:
            self._items[key] = CheckWarning(name, message, source, count)

    def extend(self, warnings: Sequence[CheckWarning]) -> None:
        for w in warnings:
            self.add(w.name, w.message, w.source, w.count)

    def merge_max(self, warnings: Sequence[dict[str, Any]]) -> None:
        """Add warnings seen again (e.g. after a resume) without counting the same ones twice."""
        for w in warnings:
            key = (w.get("source", "harden"), w["name"], w["message"])
            if key in self._items:
                self._items[key].count = max(self._items[key].count, int(w.get("count", 1)))
            else:
                self.add(w["name"], w["message"], w.get("source", "harden"), int(w.get("count", 1)))

    def items(self) -> list[CheckWarning]:
        return list(self._items.values())

    def as_dicts(self) -> list[dict[str, Any]]:
        return [w.as_dict() for w in self._items.values()]

    def __len__(self) -> int:
        return len(self._items)


def autoattack_warning_name(message: str) -> str:
    """A stable name for one of AutoAttack's warning messages."""
    for needle, name in _AA_NAMES:
        if needle in message:
            return name
    return "autoattack"


class _Capture(logging.Handler):
    def __init__(self, log: WarningLog) -> None:
        super().__init__(level=logging.WARNING)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        name = autoattack_warning_name(msg)
        if name == "randomized-defense":
            msg += " " + RAND_HINT
        self.log.add(name, msg, "autoattack")


@contextlib.contextmanager
def capture_autoattack(log: WarningLog) -> Iterator[logging.Logger]:
    """Route the ``auto-attack`` logger's warnings into ``log`` while the block runs."""
    logger = logging.getLogger(AUTOATTACK_LOGGER)
    handler = _Capture(log)
    logger.addHandler(handler)
    try:
        yield logger
    finally:
        logger.removeHandler(handler)


# --------------------------------------------------------------------------------- model checks


def _names(items: Sequence[str], k: int = 3) -> str:
    return ", ".join(items[:k]) + (f" and {len(items) - k} more" if len(items) > k else "")


def check_eval_mode(model: nn.Module) -> list[CheckWarning]:
    """After ``model.eval()``: modules still training, and batch norms that use batch statistics."""
    out = []
    training = [name or type(model).__name__ for name, m in model.named_modules() if m.training]
    if training:
        out.append(CheckWarning(
            "train-mode",
            f"{len(training)} module(s) stay in training mode after model.eval() ({_names(training)}); "
            "dropout or batch statistics make predictions depend on the batch, and batch-norm running "
            "statistics change during the attack"))
    batch_stats = [name for name, m in model.named_modules()
                   if isinstance(m, nn.modules.batchnorm._NormBase) and not m.track_running_stats
                   and not isinstance(m, nn.modules.instancenorm._InstanceNorm)]
    if batch_stats:
        out.append(CheckWarning(
            "batch-statistics",
            f"batch norm without running statistics ({_names(batch_stats)}) normalizes with the statistics "
            "of each batch, so a prediction depends on the other images in its batch"))
    return out


def snapshot_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every buffer (batch-norm running statistics and the like)."""
    return {name: b.detach().clone() for name, b in model.named_buffers()}


def check_buffers_unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> list[CheckWarning]:
    """Buffers that changed since :func:`snapshot_buffers` (the model learned from the attack)."""
    changed = []
    for name, b in model.named_buffers():
        old = before.get(name)
        if old is not None and (old.shape != b.shape or not torch.equal(old, b.detach())):
            changed.append(name)
    if not changed:
        return []
    return [CheckWarning(
        "buffers-changed",
        f"{len(changed)} buffer(s) changed during the evaluation ({_names(changed)}): batch-norm running "
        "statistics were updated by the attack's inputs, so the model evaluated is not the model saved")]


def check_inputs(x_min: float, x_max: float) -> list[CheckWarning]:
    """Images must be in [0, 1]: the eps-ball and clipping of every attack assume it."""
    if x_min >= 0.0 and x_max <= 1.0:
        return []
    return [CheckWarning(
        "inputs-out-of-range",
        f"input images span [{x_min:.3g}, {x_max:.3g}], not [0, 1]: eps and clipping are meaningless; "
        "pass unnormalized images and put the normalization inside the model")]


def check_outputs(logits: torch.Tensor) -> list[CheckWarning]:
    """Outputs must be logits, not probabilities or log-probabilities (both flatten the losses)."""
    out = logits.detach().float()
    if out.dim() != 2:
        return [CheckWarning("not-logits", f"model output has shape {tuple(out.shape)}, not (batch, classes)")]
    tol = 1e-4
    if out.min() > -tol and out.max() < 1 + tol and ((out.sum(1) - 1).abs() < tol).all():
        return [CheckWarning(
            "not-logits",
            "outputs are probabilities (each row in [0, 1] summing to 1): remove the final softmax, "
            "attacks on probabilities see vanishing gradients")]
    if out.max() <= tol and (torch.logsumexp(out, 1).abs() < tol).all():
        return [CheckWarning(
            "not-logits",
            "outputs are log-probabilities (log-softmax): remove the final log_softmax so the attacks see logits")]
    return []


def gradient_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example L2 norm of the cross-entropy gradient with respect to the input."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad.flatten(1).norm(dim=1)


def check_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[CheckWarning]:
    """Zero or vanishing input gradients on clean inputs (gradient masking or saturated outputs)."""
    try:
        norms = gradient_norms(model, x, y)
    except RuntimeError as exc:  # the output does not depend on the input through autograd at all
        return [CheckWarning("zero-gradients", f"no input gradient could be computed ({str(exc)[:100]}); "
                             "gradient-based attacks cannot work on this model")]
    m = len(norms)
    zero = int((norms == 0).sum())
    finite = torch.isfinite(norms)
    vanishing = int(((norms > 0) & (norms < VANISHING_GRAD)).sum())
    out = []
    if zero:
        out.append(CheckWarning(
            "zero-gradients",
            f"{zero} of {m} clean examples have an exactly zero input gradient: gradient-based attacks cannot "
            "move them, so robust accuracy is overestimated (gradient masking: rounding, argmax, saturation?)"))
    if vanishing:
        out.append(CheckWarning(
            "vanishing-gradients",
            f"{vanishing} of {m} clean examples have an input gradient below {VANISHING_GRAD:g} (saturated "
            "softmax or masking): cross-entropy attacks may stall; trust DLR/targeted attacks more"))
    if not bool(finite.all()):
        out.append(CheckWarning(
            "non-finite-gradients", f"{int((~finite).sum())} of {m} clean examples have NaN/inf input gradients"))
    return out


def _known_statistics(channels: int) -> list[tuple[str, tuple[float, ...], tuple[float, ...]]]:
    """The common normalizations for ``channels`` channels, named as the check's message says them."""
    from harden.model import known_statistics

    def label(name: str) -> str:  # "ImageNet statistics", "ImageNet statistics (channel average)"
        if name == "none":
            return "no normalization"
        base, _, aside = name.partition(" (")
        return f"{base} statistics" + (f" ({aside}" if aside else "")

    return [(label(name), m, s) for name, m, s in known_statistics(channels)]


def _values(mean: Sequence[float], std: Sequence[float]) -> str:
    from harden.model import statistics_text

    return statistics_text(mean, std)


def _correct_with(model: Any, x: torch.Tensor, y: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                  batch_size: int) -> torch.Tensor:
    """Which of ``x`` a harden model classifies correctly when its inputs are normalized by ``mean``/``std``."""
    buf = model.normalize.mean
    m = torch.tensor(list(mean), dtype=buf.dtype, device=buf.device).view(1, -1, 1, 1)
    s = torch.tensor(list(std), dtype=buf.dtype, device=buf.device).view(1, -1, 1, 1)
    out = []
    with torch.no_grad():
        for i in range(0, len(y), batch_size):
            xb = x[i:i + batch_size].to(buf.device, buf.dtype)
            out.append(model.net(model.input_transforms((xb - m) / s)).argmax(1).cpu() == y[i:i + batch_size].cpu())
    return torch.cat(out)


def check_normalization(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int) -> list[CheckWarning]:
    """A harden model's clean accuracy on ``x`` with its stated mean/std against no normalization, ImageNet's
    and CIFAR-10's: a warning when one of them gains at least ``NORMALIZATION_GAIN`` points on the same images
    with an exact paired test p-value below ``NORMALIZATION_P``. Other models are not checked."""
    from harden.model import HardenedModel
    from harden.stats import mcnemar_exact_p

    if not isinstance(model, HardenedModel) or len(y) == 0:
        return []
    mean, std = model.normalize.mean.flatten().tolist(), model.normalize.std.flatten().tolist()
    stated_text = _values(mean, std)
    stated = _correct_with(model, x, y, mean, std, batch_size)
    best: tuple[torch.Tensor, str, tuple[float, ...], tuple[float, ...], float] | None = None
    for name, m, s in _known_statistics(len(mean)):
        if all(abs(a - b) < 1e-3 for a, b in zip((*m, *s), (*mean, *std))):
            stated_text = f"{name} ({stated_text})"
            continue  # the stated normalization itself
        alt = _correct_with(model, x, y, m, s, batch_size)
        p = mcnemar_exact_p(int((stated & ~alt).sum()), int((alt & ~stated).sum()))
        gain = 100 * int(alt.sum() - stated.sum()) / len(y)
        if gain >= NORMALIZATION_GAIN and p < NORMALIZATION_P and (best is None or alt.sum() > best[0].sum()):
            best = (alt, name, m, s, p)
    if best is None:
        return []
    alt, name, m, s, p = best
    return [CheckWarning(
        "normalization-mismatch",
        f"of the first {len(y)} images {int(alt.sum())} are classified correctly with {name} ({_values(m, s)}), "
        f"only {int(stated.sum())} with the model's stated {stated_text} (exact paired test p = {p:.1g}): its "
        f"normalization is probably wrong; rebuild it from its spec with --mean {','.join(f'{v:g}' for v in m)} "
        f"--std {','.join(f'{v:g}' for v in s)}")]


def check_perturbation(x: torch.Tensor, x_adv: torch.Tensor, eps: float, norm: str) -> int:
    """How many adversarial images leave the eps-ball or [0, 1] (should be 0)."""
    d = (x_adv - x).flatten(1).float()
    size = d.abs().amax(1) if norm == "Linf" else d.abs().sum(1) if norm == "L1" else d.norm(dim=1)
    bad = (size > eps * (1 + 1e-4) + 1e-6) | (x_adv.flatten(1).amin(1) < -1e-6) | (x_adv.flatten(1).amax(1) > 1 + 1e-6)
    return int(bad.sum())


def tolerance(m: int) -> int:
    """Examples a stronger attack may 'lose' on ``m`` examples before it counts as a failed check."""
    return max(1, math.ceil(0.03 * m))


def check_strength(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str, seed: int,
                   final_robust: torch.Tensor | None = None, final_name: str | None = None,
                   steps: int = 5) -> tuple[list[CheckWarning], dict[str, Any]]:
    """Robust accuracy must not rise with more steps or with a larger eps.

    On ``x`` (a small subset) runs PGD-``steps`` at ``eps`` and at ``2*eps`` (when that is still a
    valid radius) from the same random start (for L1, which harden's PGD does not take: APGD-CE with
    ``steps`` iterations). The main attack (``final_robust``: which of ``x`` it left robust) has many
    more steps and must not leave more examples robust; the attack at ``2*eps`` must not leave more
    robust than at ``eps``.
    """
    def robust(e: float) -> torch.Tensor:
        with torch.enable_grad():
            adv = _short_attack(model, x, y, eps=e, norm=norm, steps=steps, seed=seed)
        with torch.no_grad():
            return model(adv).argmax(1) == y

    m = len(y)
    tol = tolerance(m)
    base = int(robust(eps).sum())
    counts: dict[str, Any] = {"examples": m, f"pgd{steps}": base}
    out = []
    if final_robust is not None:
        final = int(final_robust.sum())
        counts["final"] = final
        if final > base + tol:
            out.append(CheckWarning(
                "more-steps-raise-accuracy",
                f"on {m} check examples {final_name} leaves {final} robust but PGD-{steps} only {base}: "
                "an attack with more steps should not do worse (noisy or masked gradients?)"))
    if norm != "Linf" or 2 * eps <= 1.0:
        big = int(robust(2 * eps).sum())
        counts[f"pgd{steps}_2eps"] = big
        if big > base + tol:
            out.append(CheckWarning(
                "larger-eps-raises-accuracy",
                f"on {m} check examples PGD-{steps} at eps {2 * eps:.4g} leaves {big} robust but at eps {eps:.4g} "
                f"only {base}: accuracy must fall as eps grows (masked gradients?)"))
    return out, counts


def _short_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str, steps: int,
                  seed: int) -> torch.Tensor:
    """A few-step attack for the strength check: harden's PGD, or for L1 pyautoattack's APGD-CE."""
    if norm == "L1":
        return apgd_ce(model, x, y, eps=eps, norm="L1", iterations=steps, seed=seed)
    from harden.attacks import pgd

    return pgd(model, x, y, eps=eps, steps=steps, norm=norm, generator=torch.Generator().manual_seed(seed))


def check_sweep(points: Sequence[tuple[float, int]], n: int) -> list[CheckWarning]:
    """Robust counts at increasing eps must not rise (beyond a small tolerance)."""
    tol = tolerance(n)
    out = []
    ordered = sorted(points)
    for (e0, c0), (e1, c1) in zip(ordered, ordered[1:]):
        if c1 > c0 + tol:
            out.append(CheckWarning(
                "larger-eps-raises-accuracy",
                f"robust accuracy rises from {100 * c0 / n:.2f}% at eps {e0:.4g} to {100 * c1 / n:.2f}% at "
                f"eps {e1:.4g}: accuracy must fall as eps grows"))
    return out
