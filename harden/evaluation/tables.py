"""The text ``harden evaluate`` prints: the per-attack summary and the eps-sweep table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from harden.evaluation.report_types import EvaluationReport


def _ci_text(ci: Sequence[float] | None) -> str:
    return f"   (95% interval {ci[0]:.1f} to {ci[1]:.1f})" if ci else ""


def _header(report: EvaluationReport) -> list[str]:
    """What was evaluated, on which data, against which threat and attack."""
    sel, model = report.selection, report.model
    lines = [f"model    {model.label or model.spec}"]
    norm = model.normalization
    if norm:
        from harden.model import statistics_text

        values = statistics_text(norm.mean, norm.std)
        lines.append(f"         weights {model.weights}; normalization "
                     + (f"{norm.name} ({values})" if norm.name else values))
    return lines + [
        f"data     {sel.get('data')} ({sel.get('split') or 'tensors'}, {sel.get('selection', 'first')} {report.n})"
        + (f"; skipped {sel['skipped_images']} damaged images" if sel.get("skipped_images") else ""),
        f"threat   {report.norm} eps={report.eps_text} ({report.eps:.5g})",
        f"attack   {report.attack}" + (f" {report.version}" if report.version else "")
        + f"  (seed {report.seed}, batch {report.batch_size}, {report.device}"
        + (f", {report.world_size} processes" if report.world_size > 1 else "") + ")",
    ]


def summary_table(report: EvaluationReport | Mapping[str, Any]) -> str:
    """The per-attack table printed at the end of ``harden evaluate`` (of a report, or its JSON as a dict)."""
    report = EvaluationReport.of(report)
    n = report.n
    lines = [*_header(report), "", f"{'after':<12} {'accuracy':>9} {'correct':>11} {'seconds':>9}"]
    for row in report.per_attack:
        lines.append(f"{row.attack:<12} {row.acc:>8.2f}% {row.correct:>5}/{n:<5} {row.seconds:>9.1f}")
    lines.append("")
    lines.append(f"clean accuracy:  {report.clean_acc:.2f}%{_ci_text(report.clean_ci95)}")
    lines.append(f"robust accuracy: {report.robust_acc:.2f}%{_ci_text(report.robust_ci95)}   "
                 f"({report.seconds:.1f} s)")
    if "straight_through" in report.extras:  # attacked as it is and with BPDA (harden.evaluation.straight_through)
        lines.append(f"note: {report.extras['straight_through']['note']}")
    if report.published:
        from harden.sources.zoo.robustbench import published_line

        lines.append(published_line(report.published, report.norm, report.eps_text))
    return "\n".join(lines)


def sweep_table(report: EvaluationReport | Mapping[str, Any]) -> str:
    """Robust accuracy against eps as a small table (of a report, or its JSON as a dict)."""
    rows = EvaluationReport.of(report).eps_sweep or []
    lines = [f"{'eps':<10} {'robust accuracy':>16}   95% interval"]
    lines += [f"{r.eps_text:<10} {r.robust_acc:>15.2f}%   "
              + (f"{r.robust_ci95[0]:.1f} to {r.robust_ci95[1]:.1f}" if r.robust_ci95 else "")
              for r in rows]
    return "\n".join(lines)
