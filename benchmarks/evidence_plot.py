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


def has_curves(table: dict[str, Any]) -> bool:
    """Whether any seed of the table recorded its per-epoch validation curve."""
    return any(e.get("curve") for r in table["rows"] for e in r["seeds"])


def plot_curves(table: dict[str, Any], path: str | Path) -> Path:
    """A PNG at ``path``: each row's validation PGD accuracy per epoch, one line per seed.

    A cross marks the epoch where the catastrophic-overfitting guard found a collapse, a dot the epoch that was
    kept (the best by validation PGD accuracy). This is where a collapse, or a curve still rising, shows.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    rows = [r for r in table["rows"] if any(e.get("curve") for e in r["seeds"])]
    cols = min(3, len(rows)) or 1
    lines = -(-len(rows) // cols) or 1
    fig = Figure(figsize=(max(4 * cols, 7), 2.8 * lines + 0.8), dpi=100)
    axes = fig.subplots(lines, cols, squeeze=False, sharey=True)  # one scale: rows compare at a glance
    for ax, row in zip(axes.flat, rows):
        for e in sorted(row["seeds"], key=lambda e: e["seed"]):
            points = [(c["epoch"], c["val_robust"]) for c in e.get("curve", []) if c.get("val_robust") is not None]
            if not points:
                continue
            (line,) = ax.plot(*zip(*points), marker=".", linewidth=1, label=f"seed {e['seed']}",
                              color=f"C{e['seed'] % 10}")  # a seed keeps its colour in every panel
            kept = dict(points).get(e.get("kept_epoch"))
            if kept is not None:
                ax.scatter([e["kept_epoch"]], [kept], s=40, color=line.get_color(), zorder=3)
            if e.get("collapse"):
                ax.scatter([e["collapse"]["epoch"]], [e["collapse"]["val_robust"]], s=70, marker="x",
                           color="tab:red", zorder=4)
        ax.set_title("\n".join(textwrap.wrap(f"{row['index']}. {row['row']}", 48)), fontsize=7)
        ax.set_xlabel("epoch", fontsize=7)
        ax.set_ylabel("validation PGD accuracy, %", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(rows):]:
        ax.set_visible(False)
    s = table["settings"]
    title = (f"protocol {table['protocol']}, {table['model']}: PGD-{s['val_steps']} accuracy on {s['val_n']} held-out "
             f"training images, Linf {s['eps']}; dot: kept epoch; red cross: the guard's collapse")
    fig.suptitle("\n".join(textwrap.wrap(title, 100)), fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
