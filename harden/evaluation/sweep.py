"""``--eps-sweep``: robust accuracy at each eps of a list, on the same examples as the main run."""

from __future__ import annotations

import time
from dataclasses import replace

import torch
from torch import nn

from harden.evaluation import honesty_checks as chk
from harden.evaluation.attack_plan import AttackPlan
from harden.evaluation.attack_stages import run_stages
from harden.evaluation.examples import Examples
from harden.evaluation.progress import ROBUST, Progress
from harden.evaluation.report_types import SweepRow
from harden.stats import ci95


def run_sweep(model: nn.Module, examples: Examples, plan: AttackPlan, sweep: list[tuple[float, str]],
              main_status: torch.Tensor, bs: int, device: torch.device, log: chk.WarningLog) -> list[SweepRow]:
    """One row per eps: the main run's outcome at its own eps, the plan run again at every other
    (eps 0: the clean pass alone); then the check that robust accuracy falls as eps grows."""
    rows = []
    n = examples.n
    for value, text in sweep:
        if value == plan.eps:
            status = main_status
        else:
            sub = replace(plan, eps=value, eps_text=text, stages=plan.stages if value > 0 else ())
            prog = Progress.fresh(None, {}, bs, n)
            with chk.capture_autoattack(log):
                run_stages(model, examples, sub, prog, device=device, log=log, start_time=time.perf_counter())
            status = prog.status
        robust = int((status == ROBUST).sum())
        rows.append(SweepRow(eps=value, eps_text=text, robust_acc=100 * robust / n, robust_correct=robust,
                             robust_ci95=ci95(robust, n)))
    log.extend(chk.check_sweep([(r.eps, r.robust_correct) for r in rows], n))
    return rows
