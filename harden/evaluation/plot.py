"""``--plot``: robust accuracy against eps of an ``--eps-sweep`` report, as a PNG."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harden.evaluation.report_types import EvaluationReport
from harden.runtime.atomic import save_figure


def _title(report: EvaluationReport) -> str:
    attack = report.attack + (f" {report.version}" if report.version else "")
    if report.attack != "autoattack":
        attack = ", ".join(report.attacks or [report.attack])
    return f"{report.model.spec} - {attack}"


def plot_sweep(report: EvaluationReport | Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write robust accuracy against eps as a PNG (atomically), of a report or its JSON as a dict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = EvaluationReport.of(report)
    rows = report.eps_sweep or []
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    xs = [r.eps * (255 if report.norm == "Linf" else 1) for r in rows]
    ax.plot(xs, [r.robust_acc for r in rows], marker="o")
    if rows and all(r.robust_ci95 for r in rows):
        ax.fill_between(xs, [r.robust_ci95[0] for r in rows], [r.robust_ci95[1] for r in rows],
                        alpha=0.2, label=f"95% interval (n={report.n})")
        ax.legend(fontsize=8)
    ax.set_xlabel("eps (x/255)" if report.norm == "Linf" else "eps (L2)")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(_title(report), fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)
