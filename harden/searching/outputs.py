"""What a search found: the measured candidates, their Pareto front, the proxies' scores and the output files.

Everything here reads the finished trials of an Optuna study (each trial carries harden's numbers as
user attributes) and writes, atomically, ``pareto.json``, ``pareto.png`` and ``best.yaml``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harden.searching.proxies import agreement_text, rank_agreement
from harden.serialization import atomic_path
from harden.stats import wilson_interval
from harden.summary import human

PROXIES = ("feature_map", "lipschitz")


@dataclass
class SearchResult:
    """The outcome of :func:`harden.search`: measured candidates (``rows``), the others, proxies, the best."""

    rows: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    base: dict[str, Any]
    attack: dict[str, Any]
    proxies: list[dict[str, Any]]
    study: dict[str, Any]
    space: dict[str, Any]
    recipe: dict[str, Any] | None = None
    files: dict[str, str] = field(default_factory=dict)
    verdict: dict[str, Any] | None = None

    @property
    def best(self) -> dict[str, Any] | None:
        """The verdict's pick (the confirmed winner, or the base when the verdict keeps it); without a verdict,
        the candidate with the highest robust accuracy (fewest MACs among ties); None when nothing was measured."""
        if not self.rows:
            return None
        if self.verdict is not None:
            chosen = self.verdict.get("trial")
            pick = [r for r in self.rows if (r["trial"] == chosen if chosen is not None else not r["transforms"])]
            if pick:
                return pick[0]
        return max(self.rows, key=lambda r: (r["robust_acc"], -r["macs"], -r["trial"]))

    @property
    def front(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["pareto"]]

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        return {"format": "harden.search/1", "study": self.study, "base": self.base, "attack": self.attack,
                "space": self.space, "candidates": self.rows, "not_measured": self.skipped,
                "best_trial": best["trial"] if best else None, "verdict": self.verdict, "proxies": self.proxies}


def measured_row(number: int, attrs: dict[str, Any]) -> dict[str, Any]:
    """A completed trial as a row: transforms, costs, proxies and accuracies with their 95% intervals."""
    n = int(attrs["n"])
    clean_correct = round(attrs["clean_acc"] * n / 100)
    robust_correct = round(attrs["robust_acc"] * n / 100)
    return {
        "trial": number, "transforms": list(attrs["transforms"]), "params_searched": attrs.get("params_searched", {}),
        "macs": int(attrs["macs"]), "params": int(attrs["params"]), "feature_map": attrs.get("feature_map"),
        "proxies": attrs.get("proxies", {}), "n": n, "clean_acc": attrs["clean_acc"],
        "clean_ci95": list(wilson_interval(clean_correct, n)), "robust_acc": attrs["robust_acc"],
        "robust_ci95": list(wilson_interval(robust_correct, n)), "kept_epoch": attrs.get("kept_epoch"),
        "epochs_run": attrs.get("epochs_run"), "seconds": attrs.get("seconds"), "history": attrs.get("history", []),
        "val_outcome": attrs.get("val_outcome"), "pareto": False,
    }


def mark_front(rows: Sequence[dict[str, Any]]) -> None:
    """Flag the rows that no other row beats on both robust accuracy (higher) and MACs (fewer)."""
    for r in rows:
        r["pareto"] = not any(
            o is not r and o["robust_acc"] >= r["robust_acc"] and o["macs"] <= r["macs"]
            and (o["robust_acc"] > r["robust_acc"] or o["macs"] < r["macs"]) for o in rows)


def proxy_scores(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rank_agreement(rows, p) for p in PROXIES]


def _transforms_text(transforms: Sequence[str]) -> str:
    return ", ".join(transforms) or "none (base)"


def _versus_text(row: dict[str, Any]) -> str:
    v = row.get("vs_base")
    if v is None:
        return "-" if row["transforms"] else "(base)"
    return f"{v['difference']:+.1f} ({v['ci95'][0]:+.1f} to {v['ci95'][1]:+.1f}; p={v['p_value']:.2g})"


def table(result: SearchResult) -> str:
    """The terminal table: every measured candidate, best robust accuracy first, and what was not measured."""
    att = result.attack
    lines = [f"robust accuracy: {att['name']} at {att['norm']} eps {att['eps_text']} on {att['n']} held-out "
             f"training images (seed {att['seed']}); base model {human(result.base['macs'])} MACs, "
             f"{human(result.base['params'])} parameters", ""]
    head = ("trial", "front", "MACs", "params", "fmap", "Lipschitz", "clean %", "robust % (95% interval)",
            "vs base, paired (95% interval; p)", "transforms")
    cells = [head]
    for r in sorted(result.rows, key=lambda r: (-r["robust_acc"], r["macs"])):
        lip = r["proxies"].get("lipschitz")
        fmap = r.get("feature_map")
        cells.append((str(r["trial"]), "*" if r["pareto"] else "", human(r["macs"]), human(r["params"]),
                      f"{fmap[0]}x{fmap[1]}" if fmap else "-", f"{lip:.3g}" if lip is not None else "-",
                      f"{r['clean_acc']:.1f}",
                      f"{r['robust_acc']:.1f} ({r['robust_ci95'][0]:.1f}-{r['robust_ci95'][1]:.1f})",
                      _versus_text(r), _transforms_text(r["transforms"])))
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    for k, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i in (1, 9) else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths))).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    counts: dict[str, int] = {}
    for s in result.skipped:
        counts[s["status"]] = counts.get(s["status"], 0) + 1
    if counts:
        lines += ["", "not measured: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))]
        lines += [f"  trial {s['trial']} {s['status']}: {s['reason']}" for s in result.skipped[:12]]
    if result.verdict is not None:
        from harden.searching.verdict import verdict_text

        lines += ["", verdict_text(result.verdict, result.rows)]
    lines += ["", "proxies (rank agreement with measured robust accuracy):"]
    lines += [f"  {agreement_text(p)}" for p in result.proxies]
    return "\n".join(lines)


def write_plot(path: Path, result: SearchResult) -> None:
    """robust accuracy against MACs for every measured candidate, with 95% intervals and the front."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), dpi=100)
    ax = fig.subplots()
    rows = result.rows
    for on_front, color, label in ((False, "tab:grey", "candidate"), (True, "tab:red", "Pareto front")):
        pts = [r for r in rows if r["pareto"] == on_front]
        if pts:
            ax.errorbar([r["macs"] for r in pts], [r["robust_acc"] for r in pts],
                        yerr=[[r["robust_acc"] - r["robust_ci95"][0] for r in pts],
                              [r["robust_ci95"][1] - r["robust_acc"] for r in pts]],
                        fmt="o", color=color, ecolor=color, alpha=0.8, capsize=3, label=label)
    front = sorted(result.front, key=lambda r: r["macs"])
    if len(front) > 1:
        ax.step([r["macs"] for r in front], [r["robust_acc"] for r in front], where="post", color="tab:red", lw=1)
    ax.axvline(result.base["macs"], color="black", linestyle="--", lw=1, label="base model")
    ax.set_xscale("log")
    ax.set_xlabel("MACs per image")
    ax.set_ylabel(f"robust accuracy % ({result.attack['name']}, n={result.attack['n']})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"harden search: {result.study.get('model', '')}", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def best_recipe(result: SearchResult, model_block: dict[str, Any], data_spec: str, finetune: dict[str, Any],
                *, epochs: int | None, evaluate: dict[str, Any], prefix: Sequence[str] = ()) -> dict[str, Any] | None:
    """A ``harden run`` recipe for the best candidate at full budget: all training data, ``epochs`` epochs."""
    best = result.best
    if best is None:
        return None
    ft = {k: v for k, v in finetune.items() if k != "train_n" and v is not None}
    if epochs is not None:
        ft["epochs"] = epochs
    return {
        "name": "search-best",
        "description": (f"best candidate of harden search (trial {best['trial']}): {best['robust_acc']:.1f}% robust "
                        f"({result.attack['name']}, n={result.attack['n']} held-out training images) after "
                        f"{best['epochs_run']} epochs on {finetune.get('train_n') or 'all'} training images"
                        + ("; no transform beat the base model" if not best["transforms"] else "")),
        "model": model_block,
        "data": {"train": data_spec, "test": data_spec},
        "transforms": [*prefix, *best["transforms"]],
        "finetune": ft,
        "evaluate": evaluate,
    }


def write_outputs(out: Path, result: SearchResult, echo: Callable[[str], Any]) -> None:
    """pareto.json, pareto.png and (when something was measured) best.yaml, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"pareto": out / "pareto.json", "plot": out / "pareto.png", "best": out / "best.yaml"}
    if result.rows:
        write_plot(files["plot"], result)
    if result.recipe is not None:
        with atomic_path(files["best"]) as tmp:
            tmp.write_text("# written by harden search; run it with: harden run best.yaml\n"
                           + yaml.safe_dump(result.recipe, sort_keys=False))
    result.files = {k: str(v) for k, v in files.items() if v.exists() and (k != "plot" or result.rows)}
    with atomic_path(files["pareto"]) as tmp:
        tmp.write_text(json.dumps(result.to_dict(), indent=2, default=_json_default) + "\n")
    result.files["pareto"] = str(files["pareto"])
    for path in result.files.values():
        echo(f"wrote {path}")


def _json_default(value: Any) -> Any:
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)
