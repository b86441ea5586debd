"""``--plot``: robust accuracy against eps of an ``--eps-sweep`` report, as a PNG."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from harden.runtime.atomic import save_figure


def _title(report: dict[str, Any]) -> str:
    attack = report["attack"] + (f" {report['version']}" if report.get("version") else "")
    if report["attack"] != "autoattack":
        attack = ", ".join(report.get("attacks") or [report["attack"]])
    return f"{report['model'].get('spec')} - {attack}"


def plot_sweep(report: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write robust accuracy against eps as a PNG (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report.get("eps_sweep") or []
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    xs = [r["eps"] * (255 if report["norm"] == "Linf" else 1) for r in rows]
    ax.plot(xs, [r["robust_acc"] for r in rows], marker="o")
    if rows and all(r.get("robust_ci95") for r in rows):
        ax.fill_between(xs, [r["robust_ci95"][0] for r in rows], [r["robust_ci95"][1] for r in rows], alpha=0.2,
                        label=f"95% interval (n={report['n']})")
        ax.legend(fontsize=8)
    ax.set_xlabel("eps (x/255)" if report["norm"] == "Linf" else "eps (L2)")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(_title(report), fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)
