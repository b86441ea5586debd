"""The evidence table as a picture: each row's accuracy against the baseline of the same seed, seed by seed."""

from __future__ import annotations

import statistics
import textwrap
from pathlib import Path
from typing import Any

from harden.runtime.atomic import save_figure


def _differences(table: dict[str, Any], row: dict[str, Any]) -> list[tuple[float, float, float]]:
    """(robust difference, clean difference, McNemar p) per seed of ``row`` that has a baseline of its seed."""
    base = {e["seed"]: e for r in table["rows"] if r["index"] == 0 for e in r["seeds"]}
    out = []
    for e in row["seeds"]:
        if "vs_baseline" in e and e["seed"] in base:
            out.append((e["vs_baseline"]["difference"], e["clean_acc"] - base[e["seed"]]["clean_acc"],
                        e["vs_baseline"]["p_value"]))
    return out


def _panel(ax: Any, rows: list[tuple[str, list[float], list[bool]]], xlabel: str) -> None:
    """Dots per seed (filled where marked significant), a bar at the mean, a line at zero."""
    for y, (_, values, significant) in enumerate(rows):
        for v, sig in zip(values, significant):
            ax.scatter([v], [y], s=36, edgecolors="tab:blue", facecolors="tab:blue" if sig else "none", zorder=3)
        if values:
            ax.plot([statistics.mean(values)] * 2, [y - 0.3, y + 0.3], color="black", linewidth=2, zorder=2)
    ax.axvline(0, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_yticks(range(len(rows)), [label for label, _, _ in rows], fontsize=7)
    ax.grid(axis="x", alpha=0.3)


def plot_table(table: dict[str, Any], path: str | Path, attack: str, *, alpha: float) -> Path:
    """A PNG at ``path``: per row, robust and clean accuracy minus the same seed's baseline, in points.

    Each seed is a dot, filled where its exact McNemar p against the baseline is below ``alpha``; the black bar
    is the mean over seeds. ``attack`` names the robust-accuracy attack (with eps and n) for the axis label.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    robust, clean = [], []
    for row in table["rows"]:
        if row["index"] == 0:
            continue
        label = "\n".join(textwrap.wrap(f"{row['index']}. {row['row']}", 42))
        diffs = _differences(table, row)
        robust.append((label, [d[0] for d in diffs], [d[2] < alpha for d in diffs]))
        clean.append((label, [d[1] for d in diffs], [False] * len(diffs)))
    fig = Figure(figsize=(10, 0.55 * len(robust) + 1.8), dpi=100)
    ax1, ax2 = fig.subplots(1, 2, sharey=True)
    _panel(ax1, robust, f"robust accuracy minus the baseline's, points\n({attack}); filled: p < {alpha}")
    _panel(ax2, clean, "clean accuracy minus the baseline's, points")
    ax1.invert_yaxis()  # the axes share y: row 1 at the top, inverted once
    base = next((r for r in table["rows"] if r["index"] == 0), None)
    if base is not None:
        mean = statistics.mean(e["robust_acc"] for e in base["seeds"])
        fig.suptitle(f"protocol {table['protocol']}, {table['model']}: each dot one training seed; baseline "
                     f"robust accuracy {mean:.1f}% (mean of {len(base['seeds'])} seeds)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
