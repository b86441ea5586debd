"""The checks around an evaluation's attacks: before them (AutoAttack's own checks and harden's
on the model's mode, normalization and gradients) and after them (Square's success, the input
range, and whether the attack is at least as strong as a short PGD run). Each failed check is a
named warning; the checks themselves are in :mod:`~harden.evaluation.honesty_checks`."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from harden.attacks import get_attack
from harden.evaluation import honesty_checks as chk
from harden.evaluation.attack_plan import AttackPlan
from harden.evaluation.autoattack import autoattack_preflight, autoattack_square_check
from harden.evaluation.examples import Examples
from harden.evaluation.progress import ROBUST, Progress, count_correct, robust_at_start
from harden.runtime import distributed as hd


def preflight(model: nn.Module, examples: Examples, plan: AttackPlan, *, batch_size: int, device: torch.device,
              log: chk.WarningLog, check_examples: int) -> None:
    """AutoAttack's checks (as it runs them, on the first batch) and harden's checks on clean inputs."""
    log.extend(chk.check_eval_mode(model))
    xn, yn = examples.get(torch.arange(min(chk.NORMALIZATION_IMAGES, examples.n)))
    log.extend(chk.check_normalization(model, xn, yn, batch_size=batch_size))
    x, y = examples.get(torch.arange(min(batch_size, examples.n)))
    autoattack_preflight(model, x.to(device), y.to(device), plan, batch_size=batch_size)
    if check_examples > 0:
        m = min(check_examples, examples.n)
        xs, ys = examples.get(torch.arange(m))
        log.extend(chk.check_gradients(model, xs.to(device), ys.to(device)))


def _square_check(n: int, plan: AttackPlan, status: torch.Tensor, log: chk.WarningLog) -> None:
    """AutoAttack's check on Square, over the attacks that actually ran."""
    acc = {"clean": count_correct(status, 0) / n}
    for k, name in enumerate(plan.stages, start=1):
        if int(robust_at_start(status, k).sum()) == 0:
            break
        acc[name] = count_correct(status, k) / n
    with chk.capture_autoattack(log):
        autoattack_square_check(acc)


def _strength_check(model: nn.Module, examples: Examples, plan: AttackPlan, status: torch.Tensor, *,
                    device: torch.device, log: chk.WarningLog, check_examples: int) -> dict[str, Any]:
    """PGD-5 (one step for FGSM) on a few examples; a many-step attack on the same loss family must beat it."""
    spec = get_attack(plan.attack)
    m = min(check_examples, examples.n)
    xs, ys = examples.get(torch.arange(m))
    compare = (spec is not None and spec.beats_pgd5) or (plan.attack == "pgd" and (plan.steps or 0) > 5)
    final = (status[:m] == ROBUST) if compare else None
    name = plan.stages[-1] if plan.attack != "autoattack" else f"autoattack {plan.version}"
    warns, strength = chk.check_strength(model, xs.to(device), ys.to(device), eps=plan.eps, norm=plan.norm,
                                         seed=plan.seed, final_robust=final, final_name=name,
                                         steps=spec.strength_steps if spec is not None else 5)
    log.extend(warns)
    return strength


def after_attacks(model: nn.Module, examples: Examples, plan: AttackPlan, prog: Progress, *,
                  device: torch.device, log: chk.WarningLog, check_examples: int) -> dict[str, Any] | None:
    """The checks once the attacks have run (on rank 0); the strength check's figures, if it ran."""
    if plan.uses_autoattack and hd.is_main():
        _square_check(examples.n, plan, prog.status, log)
    x_lo, x_hi = prog.x_range  # already reduced over the ranks: checked once, on rank 0
    if math.isfinite(x_lo) and hd.is_main():
        log.extend(chk.check_inputs(x_lo, x_hi))
    if hd.is_main() and check_examples > 0 and plan.stages:
        return _strength_check(model, examples, plan, prog.status, device=device, log=log,
                               check_examples=check_examples)
    return None
