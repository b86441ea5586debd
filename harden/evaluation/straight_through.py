"""Evaluating a model whose transforms inserted straight-through operators (MeanSparse): once as it is and
once with BPDA (:mod:`harden.bpda`), an image counting as robust only when it withstands both.

An operator with zero gradient over much of its input can make a gradient attack fail for want of a
gradient (gradient masking), so the figure of the model as it is may be too high; RobustBench's best-known
figure for MeanSparse on WRN-94-16 comes from such a straight-through attack. The report keeps both runs'
figures (``straight_through``), takes the lower per image as the robust accuracy, and warns
(``gradient-masking``) when the model as it is looks more robust than the straight-through attack allows.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from harden.evaluation.honesty_checks import tolerance
from harden.evaluation.report_types import EvaluationReport, ExampleOutcomes, ReportWarning
from harden.stats import ci95

ROBUST = "robust"


def _figures(report: EvaluationReport) -> dict[str, Any]:
    return {"robust_acc": report.robust_acc, "robust_correct": report.robust_correct,
            "robust_ci95": report.robust_ci95}


def combine(as_is: EvaluationReport, through: EvaluationReport, modules: int) -> EvaluationReport:
    """The report of the two runs on the same images: robust only if robust in both (the lower per image)."""
    first, second = as_is.outcome, through.outcome
    outcome = [a if a != ROBUST else (ROBUST if b == ROBUST else f"bpda:{b}") for a, b in zip(first, second)]
    k, n = outcome.count(ROBUST), len(outcome)
    note = (f"{modules} straight-through operator{'s' if modules != 1 else ''}: attacked as it is "
            f"({as_is.robust_acc:.2f}%) and with BPDA ({through.robust_acc:.2f}%); the robust accuracy counts an "
            "image as robust only when it withstands both")
    warnings = list(as_is.warnings)
    if as_is.robust_correct > through.robust_correct + tolerance(n):
        message = (f"the model as it is keeps {as_is.robust_correct} of {n} images robust but only "
                   f"{through.robust_correct} when its straight-through operators pass gradients (BPDA): its "
                   "gradients are masked, and the figure without BPDA overstates its robustness")
        warnings.append(ReportWarning(name="gradient-masking", message=message))
    extras = {**as_is.extras, "straight_through": {"modules": modules, "as_is": _figures(as_is),
                                                   "bpda": _figures(through), "note": note}}
    examples = dataclasses.replace(as_is.examples, outcome=outcome) if as_is.examples is not None else None
    assert isinstance(examples, ExampleOutcomes)
    return dataclasses.replace(as_is, robust_correct=k, robust_acc=100 * k / n if n else 0.0,
                               robust_ci95=ci95(k, n) if n else None, examples=examples, warnings=warnings,
                               extras=extras)
