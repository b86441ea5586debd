"""harden's pitch measured: robust accuracy against training compute, from scratch and by fine-tuning a clean network.

Reads an evidence table whose rows include from-scratch adversarial training (row 0) and fine-tuning rows
of a clean-trained network with a fraction of its budget (``budget`` in the row's training). Compute is
counted in forward-backward passes over training images (validation excluded), and in wall-clock seconds.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from harden.runtime.atomic import save_figure

#: two-sided 95% Student t quantiles by degrees of freedom (seeds - 1)
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def budget_rows(table: dict[str, Any]) -> list[dict[str, Any]]:
    """The table's fine-tuning rows that spend a fraction of the from-scratch budget, in row order."""
    definitions = table.get("row_definitions", [])
    out = []
    for r in table["rows"]:
        d = definitions[r["index"]] if r["index"] < len(definitions) else []
        if len(d) > 3 and d[3] and "budget" in d[3]:
            out.append({**r, "budget": d[3]["budget"]})
    return out


def _by_seed(row: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {e["seed"]: e for e in row["seeds"]}


def mean_interval(values: list[float]) -> tuple[float, float, float] | None:
    """Mean and 95% t interval over seeds (None for fewer than 2 values)."""
    if len(values) < 2:
        return None
    m, sd = statistics.mean(values), statistics.stdev(values)
    half = _T95.get(len(values) - 1, 1.96) * sd / len(values) ** 0.5
    return m, m - half, m + half


def pitch_findings(table: dict[str, Any]) -> list[dict[str, Any]]:
    """Per fine-tuning row: its robust accuracy as a share of the same seed's from-scratch robust accuracy and
    its compute as a share of the from-scratch compute, each as mean and 95% interval over seeds."""
    base = next((_by_seed(r) for r in table["rows"] if r["index"] == 0), {})
    out = []
    for row in budget_rows(table):
        shares, costs, seconds = [], [], []
        for seed, e in _by_seed(row).items():
            b = base.get(seed)
            if b is None or not b.get("robust_acc") or not b.get("train_passes") or "train_passes" not in e:
                continue
            shares.append(100 * e["robust_acc"] / b["robust_acc"])
            costs.append(100 * e["train_passes"] / b["train_passes"])
            seconds.append(100 * e["train_seconds"] / b["train_seconds"])
        if shares:
            out.append({"index": row["index"], "row": row["row"], "budget": row["budget"], "seeds": len(shares),
                        "share": mean_interval(shares) or (shares[0], shares[0], shares[0]),
                        "compute": statistics.mean(costs), "wall_clock": statistics.mean(seconds)})
    return out


def pitch_sentences(table: dict[str, Any]) -> list[str]:
    """The measured sentences the README quotes, one per fine-tuning row."""
    lines = []
    for f in pitch_findings(table):
        mean, lo, hi = f["share"]
        interval = f" (95% interval over {f['seeds']} seeds {lo:.0f}-{hi:.0f}%)" if f["seeds"] > 1 else " (1 seed)"
        lines.append(f"- row {f['index']} ({f['row']}): fine-tuning an existing clean network reaches {mean:.0f}%"
                     f"{interval} of the from-scratch robust accuracy at {f['compute']:.0f}% of its compute "
                     f"({f['wall_clock']:.0f}% of its wall-clock time).")
    return lines


def _floor(table: dict[str, Any]) -> float:
    """The y axis' lower end: 15 points below the lowest test figure, so that the points stay readable; the
    from-scratch validation curve's falls below it are marked on the axis instead of stretching it."""
    rows = [r for r in table["rows"] if r["index"] == 0] + budget_rows(table)
    tests = [e["robust_acc"] for r in rows for e in r["seeds"]]
    return max(0.0, 5 * ((min(tests) - 15) // 5)) if tests else 0.0


def _scratch_curves(ax: Any, base: dict[int, dict[str, Any]], key: str, floor: float) -> None:
    fell = False
    for k, (_seed, e) in enumerate(sorted(base.items())):
        curve = [c for c in e.get("curve", []) if c.get("val_robust") is not None]
        if not curve or not e.get("epochs_run"):
            continue
        total = e["train_passes"] if key == "train_passes" else e["train_seconds"]
        xs = [total * c["epoch"] / e["epochs_run"] for c in curve]
        ys = [c["val_robust"] for c in curve]
        ax.plot(xs, [max(y, floor) for y in ys], color="tab:grey", linewidth=1, alpha=0.7,
                label="from scratch: validation PGD, per epoch" if k == 0 else None)
        low = [(x, y) for x, y in zip(xs, ys) if y < floor]
        ax.scatter([x for x, _ in low], [floor] * len(low), color="tab:grey", marker="v", s=30, zorder=3,
                   label=None if fell or not low else f"validation fall below {floor:.0f}% (off the axis)")
        fell = fell or bool(low)
        ax.scatter([total], [e["robust_acc"]], color="black", marker="s", s=30, zorder=3,
                   label="from scratch: test robust accuracy" if k == 0 else None)


def plot_pitch(table: dict[str, Any], path: str | Path, attack: str) -> Path:
    """A PNG: robust accuracy against training compute (passes; and wall-clock) per seed."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    base = next((_by_seed(r) for r in table["rows"] if r["index"] == 0), {})
    floor = _floor(table)
    fig = Figure(figsize=(11, 4.6), dpi=100)
    axes = fig.subplots(1, 2, sharey=True)
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    for ax, key, label in ((axes[0], "train_passes", "training compute (forward-backward passes over images)"),
                           (axes[1], "train_seconds", "training wall-clock (s)")):
        _scratch_curves(ax, base, key, floor)
        families: dict[str, str] = {}
        for row in budget_rows(table):
            family = row["row"].rsplit(",", 1)[0]  # the row without its share of the budget
            first = family not in families
            color = families.setdefault(family, colors[len(families) % len(colors)])
            pts = [(e[key], e["robust_acc"]) for e in row["seeds"] if key in e]
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=color, s=24, zorder=3,
                       label=f"{family}: test robust accuracy" if first else None)
        ax.set_xlabel(label, fontsize=8)
        ax.set_ylim(bottom=floor)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("robust accuracy %", fontsize=8)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"protocol {table['protocol']}: fine-tuning a clean network (one point per seed and budget: "
                 f"10/25/50% of the from-scratch epochs) against training from scratch\ntest: {attack}; "
                 "validation: PGD on held-out training images", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
