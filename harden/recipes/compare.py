"""The comparison of a ``harden run``: one row per model, the notes that qualify the table, comparison.md/json.

Each row gives a model's size, its fine-tuning (read from the model's typed provenance) and its
accuracies under each attack; the notes say what the data were, where the models started and how far
the accuracies can be trusted (intervals, and each variant paired with the baseline).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harden.attacks import attack_label
from harden.evaluation.report_types import EvaluationReport
from harden.methods import METHODS
from harden.provenance import FinetuneEntry
from harden.recipes.run_plan import RunPlan
from harden.recipes.schema import Recipe
from harden.runtime.atomic import atomic_path
from harden.stats import compare_reports
from harden.summary import count_macs, human


def _fmt_pct(v: float | None, ci: list[float] | None = None) -> str:
    """An accuracy, with its 95% interval when known: ``43.2 (38.9-47.6)``."""
    if v is None:
        return "-"
    return f"{v:.1f} ({ci[0]:.1f}-{ci[1]:.1f})" if ci else f"{v:.1f}"


def comparison_markdown(result: dict[str, Any]) -> str:
    """The comparison table (baseline against hardened) as markdown, with the notes that qualify it."""
    rows = result["rows"]
    attacks = result["attack_columns"]
    head = ["model", "transforms", "params", "MACs", "fine-tuning", "clean % (95% interval)"] + [
        f"{a} % (95% interval)" for a in attacks]
    lines = [f"### {result['recipe']}: baseline vs hardened", "",
             "| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 5 + ["---:"] * (1 + len(attacks))) + "|"]
    for r in rows:
        cells = [r["model"], ", ".join(r["transforms"]) or "none", human(r["params"]),
                 human(r["macs"]) if r.get("macs") is not None else "-", r["finetune_text"],
                 _fmt_pct(r["clean_acc"], r.get("clean_ci95"))] + [
            _fmt_pct(r["robust"].get(a), (r.get("robust_ci95") or {}).get(a)) for a in attacks]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"- {note}" for note in result["notes"]]
    return "\n".join(lines) + "\n"


def _uncertainty_notes(evaluations: dict[str, list[EvaluationReport]]) -> list[str]:
    """How far the table's accuracies can be trusted: interval widths, and each variant paired with the baseline."""
    reports = [r for rs in evaluations.values() for r in rs]
    widths = [(ci[1] - ci[0]) / 2 for r in reports for ci in (r.clean_ci95, r.robust_ci95) if ci]
    notes = []
    if widths:
        notes.append(f"uncertainty: the 95% interval of each accuracy (Wilson, n={reports[0].n}) reaches up to "
                     f"±{max(widths):.1f} points. These intervals and the paired p-values below cover the choice "
                     "of test images only, not training noise: another training seed gives another model")
    for name, rs in evaluations.items():
        if name == "baseline" or "baseline" not in evaluations:
            continue
        for base_report, report in zip(evaluations["baseline"], rs):
            c = compare_reports(base_report, report)
            rob, cln = c["robust"], c["clean"]
            notes.append(
                f"{name} vs baseline, {attack_label(report)}: robust {rob['difference']:+.1f} points, exact McNemar "
                f"p = {rob['p_value']:.2g} ({rob['only_b']} images only {name} withstands, {rob['only_a']} only the "
                f"baseline); clean {cln['difference']:+.1f} points, p = {cln['p_value']:.2g}")
    return notes


@dataclass(frozen=True)
class _FinetuneSummary:
    """The fields of a fine-tuning that the table's fine-tuning column shows."""

    method: str
    norm: str
    eps: float
    steps: int | None
    epochs_run: int
    kept_epoch: int
    awp_gamma: float | None
    extra_fraction: float | None

    @classmethod
    def of(cls, entry: FinetuneEntry | Mapping[str, Any]) -> _FinetuneSummary:
        """From a model's typed provenance entry, or from a mapping of the same fields (``norm`` defaults to Linf)."""
        if isinstance(entry, FinetuneEntry):
            return cls(entry.method, entry.norm, entry.eps, entry.steps, entry.epochs_run, entry.kept_epoch,
                       entry.awp.gamma if entry.awp else None,
                       entry.extra_data.fraction if entry.extra_data else None)
        awp, extra = entry.get("awp"), entry.get("extra_data")
        return cls(entry["method"], entry.get("norm", "Linf"), entry["eps"], entry.get("steps"), entry["epochs_run"],
                   entry["kept_epoch"], awp["gamma"] if awp else None, extra["fraction"] if extra else None)


def finetune_text(entry: FinetuneEntry | Mapping[str, Any] | None) -> str:
    """The table's fine-tuning column: method, steps, AWP and extra data, eps, epochs run and the one kept."""
    if not entry:
        return "none"
    s = _FinetuneSummary.of(entry)
    method = METHODS.get(s.method) if s.method in METHODS else None
    if method is not None and not method.attacks:
        return f"{s.epochs_run} ep (kept {s.kept_epoch})"
    eps = f"{s.eps * 255:.3g}/255" if s.norm == "Linf" else f"{s.eps:g}"
    steps = f"-{s.steps}" if method is not None and method.fixed_steps is None else ""
    extras = (f"+awp {s.awp_gamma:g}" if s.awp_gamma is not None else "") + (
        f"+extra {s.extra_fraction:g}" if s.extra_fraction is not None else "")
    return f"{s.method}{steps}{extras} eps {eps}, {s.epochs_run} ep (kept {s.kept_epoch})"


def comparison_row(label: str, model: Any, transforms: list[str], reports: list[EvaluationReport],
                   seconds: float | None, *, pretrained: bool) -> dict[str, Any]:
    """One row of the table: a model (``start``, ``baseline`` or a variant), its fine-tuning and accuracies.

    ``pretrained`` says whether the recipe's pretrain stage trained the start model (so it has a file).
    """
    from_run = label != "start" or pretrained
    finetune = model.provenance.finetune if from_run else None
    entry = finetune.to_dict() if finetune is not None else None
    if entry:
        text = ("clean pre-training: " if label == "start" else "") + finetune_text(finetune)
    else:
        text = "none (as loaded)"
    try:
        macs = count_macs(model, model.input_size)
    except Exception:  # a model the FLOP counter cannot run: leave the column empty
        macs = None
    return {
        "model": label, "transforms": transforms, "params": sum(p.numel() for p in model.parameters()),
        "macs": macs,
        "finetune": entry and {k: x for k, x in entry.items() if k not in ("history", "previous")},
        "finetune_text": text,
        "clean_acc": reports[0].clean_acc if reports else None,
        "robust": {attack_label(r): r.robust_acc for r in reports},
        "clean_ci95": reports[0].clean_ci95 if reports else None,
        "robust_ci95": {attack_label(r): r.robust_ci95 for r in reports},
        "file": f"{label}.safetensors" if from_run else None,
        "finetune_seconds": seconds,
    }


def _data_note(plan: RunPlan, test_spec: str) -> str:
    ev = plan.evaluate
    return (f"data: fine-tuned on the train split of `{plan.data['train']}`, evaluated on "
            + (f"a random subset (seed {ev.seed}) of {ev.n}" if ev.random_subset else f"the first {ev.n}")
            + f" images of the test split of `{test_spec}`; accuracies in %, eps {plan.eps * 255:.3g}/255 "
            f"({ev.norm})")


def _start_note(plan: RunPlan) -> str:
    m, pre = plan.model, plan.pretrain
    if pre is not None:
        n_pre = pre.epochs
        return (f"start: `{m.spec}` trained from {'its given weights' if m.weights else 'scratch'} "
                f"without attacks by the recipe's pretrain stage ({n_pre} epoch{'s' if n_pre != 1 else ''}), "
                "then used as the starting point of every row below it")
    how = ("weights " + Path(m.weights).name if m.weights
           else "pretrained weights" if m.pretrained else "random initialisation")
    return f"start: `{m.spec}` as loaded ({how})"


def comparison_result(recipe: Recipe, plan: RunPlan, test_spec: str, rows: list[dict[str, Any]],
                      evaluations: dict[str, list[EvaluationReport]], seconds: float) -> dict[str, Any]:
    """The comparison ``harden run`` returns and writes: rows, attack columns, notes and the markdown table.

    ``evaluations`` maps each fine-tuned variant to its reports (for the paired tests); ``seconds`` is the run's time.
    """
    labels: list[str] = []
    for r in rows:
        labels += [a for a in r["robust"] if a not in labels]
    notes = [_data_note(plan, test_spec),
             "baseline and hardened models start from the same weights and get the same fine-tuning",
             _start_note(plan)]
    if recipe.values.get("description"):
        notes.append(str(recipe.values["description"]).strip())
    device = (rows[-1].get("finetune") or {}).get("device", "cpu") if rows else "cpu"
    notes += _uncertainty_notes(evaluations)
    notes.append(f"total time {seconds:.0f}s on {device}")
    result = {"recipe": recipe.name, "source": str(recipe.path), "out_dir": str(plan.out), "attack_columns": labels,
              "rows": rows, "notes": notes}
    result["markdown"] = comparison_markdown(result)
    return result


def write_comparison(out: Path, result: dict[str, Any]) -> None:
    """Write ``comparison.json`` (the result without its markdown) and ``comparison.md`` into ``out``."""
    with atomic_path(out / "comparison.json") as tmp:
        tmp.write_text(json.dumps({k: x for k, x in result.items() if k != "markdown"}, indent=2) + "\n")
    with atomic_path(out / "comparison.md") as tmp:
        tmp.write_text(result["markdown"])
