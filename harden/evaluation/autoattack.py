"""The adapter to the official ``pyautoattack`` code: its attack object, one of its attacks on one
batch set up exactly as ``AutoAttack.run_standard_evaluation`` does, and its own checks."""

from __future__ import annotations

import logging
import sys
import types
from typing import Any

import torch
from torch import nn

from harden.evaluation import honesty_checks as chk
from harden.evaluation.attack_plan import AA_TARGETS, AttackPlan


def _targeted_margin(apgd_t: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """APGD-T's loss for fewer than 4 classes: the targeted CW margin, logit of the target minus logit of
    the label (the targeted DLR loss without its denominator, which needs a 4th logit)."""
    u = torch.arange(x.shape[0])
    return x[u, apgd_t.y_target] - x[u, y]


def autoattack_for(model: nn.Module, plan: AttackPlan, device: torch.device) -> Any:
    """AutoAttack's object for ``plan`` (its standard parameters), or None when no stage needs it."""
    if not plan.uses_autoattack:
        return None
    from pyautoattack import AutoAttack

    # version='standard' sets the standard parameters of the norm (Linf/L2: APGD-CE 1 restart, 9 target
    # classes; L1: 5 restarts, 5 targets, large initial steps, ...); --fast and apgd-ce run a prefix of its
    # attack list with exactly those parameters. version='rand' sets its EOT over 20 draws.
    version = "rand" if plan.version == "rand" else "standard"
    aa = AutoAttack(model, norm=plan.norm, eps=plan.eps, version=version, device=device, seed=plan.seed)
    aa.attacks_to_run = list(plan.stages)
    if plan.targets is not None:  # fewer classes: every other class (the authors' advice), never above the version's
        aa.apgd_targeted.n_target_classes = min(plan.targets, aa.apgd_targeted.n_target_classes)
        aa.fab.n_target_classes = min(plan.targets, aa.fab.n_target_classes)
    if "apgd-t-cw" in plan.stages:  # everything else of APGD-T as it is (schedule, targets, seeds)
        aa.apgd_targeted.dlr_loss_targeted = types.MethodType(_targeted_margin, aa.apgd_targeted)
    return aa


def autoattack_perturb(aa: Any, attack: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One attack of AutoAttack on one batch, set up exactly as ``run_standard_evaluation`` does."""
    if attack in ("apgd-ce", "apgd-dlr"):
        aa.apgd.loss = "ce" if attack == "apgd-ce" else "dlr"
        aa.apgd.seed = aa.get_seed()
        return aa.apgd.perturb(x, y)
    if attack in ("apgd-t", "apgd-t-cw"):
        aa.apgd_targeted.seed = aa.get_seed()
        return aa.apgd_targeted.perturb(x, y)
    if attack == "fab":
        aa.fab.targeted = False
        aa.fab.seed = aa.get_seed()
        return aa.fab.perturb(x, y)
    if attack == "fab-t":
        aa.fab.targeted = True
        aa.fab.n_restarts = 1
        aa.fab.seed = aa.get_seed()
        return aa.fab.perturb(x, y)
    if attack == "square":
        aa.square.seed = aa.get_seed()
        return aa.square.perturb(x, y)
    raise ValueError(f"not an AutoAttack attack: {attack}")


def autoattack_preflight(model: nn.Module, x: torch.Tensor, y: torch.Tensor, plan: AttackPlan, *,
                         batch_size: int) -> None:
    """AutoAttack's checks on a first batch, as it runs them (their warnings go to its logger)."""
    from pyautoattack import checks as aa_checks

    logger = logging.getLogger(chk.AUTOATTACK_LOGGER)
    if plan.version != "rand":  # as AutoAttack: the rand version is for randomized models
        aa_checks.check_randomized(model, x, y, bs=batch_size, logger=logger)
    n_cls = aa_checks.check_range_output(model, x, logger=logger)
    # check_dynamic counts calls in a module-level dict it never resets, and clears any tracer (a
    # debugger, coverage): start each check from zero and put the tracer back afterwards
    for key in aa_checks.funcs:
        aa_checks.funcs[key] = 0
    tracer = sys.gettrace()
    try:
        aa_checks.check_dynamic(model, x, False, logger=logger)
    finally:
        sys.settrace(tracer)
    if plan.uses_autoattack:
        targets = plan.targets or AA_TARGETS
        aa_checks.check_n_classes(n_cls, list(plan.stages), targets, targets, logger=logger)


def autoattack_square_check(accuracy: dict[str, float]) -> None:
    """AutoAttack's check on Square's success, over the accuracies after the attacks that ran."""
    from pyautoattack import checks as aa_checks

    aa_checks.check_square_sr(accuracy, logger=logging.getLogger(chk.AUTOATTACK_LOGGER))
