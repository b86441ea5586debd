"""The evaluation report of a finished run (``harden.evaluate/1``): what was measured, how, on which
examples, with what the checks found, as the typed :class:`~harden.evaluation.report_types.EvaluationReport`
whose ``to_dict()`` is the JSON ``--report`` writes and ``--into`` stores in a model file."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from harden.evaluation import honesty_checks as chk
from harden.evaluation.attack_plan import AttackPlan
from harden.evaluation.examples import Examples
from harden.evaluation.progress import ROBUST, Progress, count_correct, outcomes, robust_at_start
from harden.evaluation.report_types import (
    REPORT_FORMAT,
    AttackRow,
    EvaluationReport,
    ExampleOutcomes,
    ModelInfo,
    Normalization,
    ReportWarning,
    SweepRow,
)
from harden.model import HardenedModel, statistics_name
from harden.provenance import Provenance, weights_text
from harden.runtime import distributed as hd
from harden.runtime.stamp import REPORT_LIBRARIES, device_text, versions
from harden.stats import ci95

__all__ = ["REPORT_FORMAT", "EvaluationReport", "Measured", "build_report", "model_info", "model_label"]


@dataclass
class Measured:
    """What a run measured and noticed, for its report."""

    examples: Examples
    selection: dict[str, Any]
    prog: Progress
    log: chk.WarningLog
    run_seconds: float
    total_seconds: float
    strength: dict[str, Any] | None = None
    sweep_rows: list[SweepRow] | None = None


def model_info(model: nn.Module) -> ModelInfo:
    """The model as a report names it: its spec (and for a harden model its classes, input and transforms)."""
    if isinstance(model, HardenedModel):
        prov = model.provenance
        m = prov.model
        return ModelInfo(spec=m.spec, num_classes=m.num_classes, input_size=list(m.input_size),
                         transforms=[t.name for t in prov.transforms], label=model_label(prov),
                         weights=weights_text(prov), normalization=Normalization(
                             mean=list(m.mean), std=list(m.std), name=statistics_name(m.mean, m.std)))
    return ModelInfo(spec=type(model).__name__)


def model_label(prov: Provenance) -> str:
    """A short name that tells models apart: the spec, its transforms with their settings, and fine-tuning."""
    parts = [prov.model.spec or prov.model.name]
    for t in prov.transforms:
        config = ",".join(f"{k}={v}" for k, v in t.config.items() if v is not None)
        parts.append(f"{t.name}:{config}" if config else t.name)
    label = " + ".join(parts)
    if prov.finetune is not None:
        label += f" (fine-tuned: {prov.finetune.method})"
    return label


def _published(model: nn.Module) -> dict[str, Any] | None:
    try:
        from harden.sources.zoo.robustbench import published
    except ImportError:
        return None
    return published(model.provenance if isinstance(model, HardenedModel) else None)


def _per_attack(plan: AttackPlan, prog: Progress, n: int) -> list[AttackRow]:
    """Accuracy after the clean pass and after each attack, with the time each took."""
    status = prog.status
    clean = count_correct(status, 0)
    seconds = prog.stage_seconds or [0.0] * (1 + len(plan.stages))
    rows = [AttackRow(attack="clean", acc=100 * clean / n, correct=clean, seconds=round(seconds[0], 3))]
    for k, name in enumerate(plan.stages, start=1):
        c = count_correct(status, k)
        rows.append(AttackRow(attack=name, acc=100 * c / n, correct=c, seconds=round(seconds[k], 3),
                              attacked=int(robust_at_start(status, k).sum())))
    return rows


def _robustbench(plan: AttackPlan, selection: dict[str, Any], clean: int, robust: int, n: int) -> dict[str, Any]:
    """The figures in RobustBench's form (its AutoAttack accuracy only for a standard AutoAttack run)."""
    dataset = str(selection.get("data", ""))
    return {
        "clean_acc": f"{100 * clean / n:.2f}",
        "autoattack_acc": f"{100 * robust / n:.2f}" if plan.is_full_autoattack else None,
        "eps": plan.eps_text,
        "threat_model": plan.norm,
        "dataset": dataset.split(":")[0] if dataset.startswith(("cifar10", "cifar100")) else dataset,
        "n_examples": n,
    }


def _accuracy(plan: AttackPlan, m: Measured, clean: int, robust: int) -> dict[str, Any]:
    """The report's accuracies, their intervals, the accuracy after each attack and the examples' outcomes."""
    n = m.examples.n
    return {
        "clean_acc": 100 * clean / n,
        "robust_acc": 100 * robust / n,
        "clean_correct": clean,
        "robust_correct": robust,
        "clean_ci95": ci95(clean, n) if n else None,
        "robust_ci95": ci95(robust, n) if n else None,
        "per_attack": _per_attack(plan, m.prog, n),
        "selection": m.selection,
        "examples": ExampleOutcomes(indices=m.examples.indices, labels=m.examples.y.tolist(),
                                    outcome=outcomes(m.prog.status, plan.stages), files=m.examples.files),
    }


def build_report(model: nn.Module, plan: AttackPlan, m: Measured, *, device: torch.device,
                 started: _dt.datetime) -> EvaluationReport:
    """The report of a finished run."""
    status = m.prog.status
    clean, robust = count_correct(status, 0), int((status == ROBUST).sum())
    n = m.examples.n
    return EvaluationReport(
        model=model_info(model), **plan.describe(),
        norm=plan.norm, threat_model=plan.norm, eps=plan.eps, eps_text=plan.eps_text,
        n=n, seed=plan.seed, batch_size=m.prog.batch_size,
        **_accuracy(plan, m, clean, robust),
        seconds=round(m.total_seconds, 3),
        attack_seconds=round(m.run_seconds, 3),
        device=device_text(device),
        world_size=hd.world_size(),
        resumed=m.prog.resumed,
        created=started.isoformat(timespec="seconds"),
        versions=versions(REPORT_LIBRARIES, python=True),
        warnings=[ReportWarning(name=w.name, message=w.message, source=w.source, count=w.count)
                  for w in m.log.items()],
        autoattack_acc=100 * robust / n if plan.is_full_autoattack else None,
        published=_published(model),  # the leaderboard's figures for this model, beside the measured ones
        strength_check=m.strength,
        eps_sweep=m.sweep_rows,
        robustbench=_robustbench(plan, m.selection, clean, robust, n),
    )
