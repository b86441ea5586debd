"""The checks around an evaluation's attacks: before them (AutoAttack's own checks and harden's
on the model's mode, normalization and gradients) and after them (Square's success, the input
range, whether the attack is at least as strong as a short PGD run, and whether a fixed-step
attack's figure survives a short APGD-CE). Each failed check is a named warning; the checks
themselves are in :mod:`~harden.evaluation.honesty_checks`."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from harden.attacks import get_attack
from harden.attacks.apgd import apgd_ce
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
    if plan.attack in FIXED_STEP and plan.norm in ("Linf", "L2"):
        strength = {**strength, **check_against_apgd(model, xs.to(device), ys.to(device), status[:m] == ROBUST,
                                                     eps=plan.eps, norm=plan.norm, seed=plan.seed, name=name,
                                                     log=log)}
    return strength


#: the fixed-step attacks whose figure a short APGD-CE must confirm on the check examples
FIXED_STEP = ("pgd", "fgsm")
#: APGD-CE's iterations for that check: on the Fashion-MNIST table's seed-0 models of rows 0, 3 and 10
#: (the first 32 and 100 of its test images; 2026-12-07) 25 left exactly as many robust as 50 and 100
APGD_CHECK_ITERATIONS = 25


def check_against_apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack_robust: torch.Tensor, *,
                       eps: float, norm: str, seed: int, name: str, log: chk.WarningLog) -> dict[str, Any]:
    """APGD-CE on the check examples; warn when it breaks more than a tenth of them (at least 3) that the
    fixed-step attack ``name`` left robust: that attack then overstates the model's robustness."""
    adv = apgd_ce(model, x, y, eps=eps, norm=norm, iterations=APGD_CHECK_ITERATIONS, seed=seed)
    with torch.no_grad():
        apgd_robust = model(adv).argmax(1) == y
    m, missed = len(y), int((attack_robust.to(x.device) & ~apgd_robust).sum())
    if missed > max(2, math.ceil(0.1 * m)):
        log.extend([chk.CheckWarning(
            "weaker-than-apgd",
            f"on {m} check examples APGD-CE ({APGD_CHECK_ITERATIONS} iterations) breaks {missed} that {name} "
            f"leaves robust: {name} overstates this model's robustness; report --attack apgd-ce or autoattack")])
    return {f"apgd-ce{APGD_CHECK_ITERATIONS}": int(apgd_robust.sum()), "robust_only_under_attack": missed}


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
