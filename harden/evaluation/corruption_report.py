"""The report of a corruption evaluation (``harden.corruptions/1``) and the table ``harden evaluate`` prints.

A plain JSON-able dict: clean accuracy, mean corruption accuracy, accuracy per type, per severity and
per (type, severity) cell, each with its 95% Wilson interval (:func:`harden.stats.ci95`), what made
the images (the generator, its version and settings, or the folder read) and each image's outcomes.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

import numpy as np
from torch import nn

from harden.evaluation.corruptions import CORRUPTIONS, FAMILY_OF, SEVERITIES, parse_corruptions
from harden.evaluation.examples import device_of
from harden.runtime import distributed as hd
from harden.runtime.stamp import REPORT_LIBRARIES, device_text, versions
from harden.schemas.evaluate import EvaluateConfig
from harden.stats import ci95

CORRUPTION_REPORT_FORMAT = "harden.corruptions/1"
Cells = dict[str, np.ndarray]  # type -> (5, n) bool: image correct at each severity
LIBRARIES = (*REPORT_LIBRARIES, "imagecorruptions-imaug", "scikit-image", "scipy", "opencv-python", "numba")
INTERVAL_NOTE = ("each (type, severity) interval is over the n images; the intervals of a type, a severity and the "
                 "mean pool the cells, in which the same n images recur, so they understate the uncertainty that "
                 "comes from the choice of test images")


def _figures(correct: int, total: int) -> dict[str, Any]:
    return {"acc": 100 * correct / total, "correct": correct, "total": total, "ci95": ci95(correct, total)}


def _per_type(cells: Cells) -> list[dict[str, Any]]:
    rows = []
    for name, grid in cells.items():
        per_severity = [{"severity": s, **_figures(int(row.sum()), len(row))} for s, row in zip(SEVERITIES, grid)]
        rows.append({"corruption": name, "family": FAMILY_OF[name], **_figures(int(grid.sum()), grid.size),
                     "per_severity": per_severity})
    return rows


def _per_severity(cells: Cells) -> list[dict[str, Any]]:
    grids = list(cells.values())
    return [{"severity": s, **_figures(sum(int(g[k].sum()) for g in grids), sum(g.shape[1] for g in grids))}
            for k, s in enumerate(SEVERITIES)]


def _bits(correct: np.ndarray) -> str:
    return "".join("1" if c else "0" for c in correct)


def _warnings(cells: Cells, cfg: EvaluateConfig, folder: dict[str, Any] | None) -> list[dict[str, Any]]:
    out = []
    if folder is not None:
        missing = [name for name in parse_corruptions(cfg.corruptions) if name not in cells]
        if missing:
            out.append({"name": "missing-corruptions", "source": "harden", "count": 1,
                        "message": f"the folder has no file for {', '.join(missing)}: the mean covers "
                                   f"{len(cells)} of the {len(CORRUPTIONS)} types and is not comparable to a full one"})
        if not folder["has_clean"]:
            out.append({"name": "no-clean-images", "source": "harden", "count": 1,
                        "message": "the folder holds no clean.npy, so there is no clean accuracy; add the N clean "
                                   "images as clean.npy to measure it"})
    return out


def build_corruption_report(model: nn.Module, cells: Cells, clean: np.ndarray | None, *, cfg: EvaluateConfig,
                            selection: dict[str, Any], indices: list[int], labels: list[int],
                            generator: dict[str, Any] | None, folder: dict[str, Any] | None, batch_size: int,
                            seconds: float, started: _dt.datetime) -> dict[str, Any]:
    """The report of a finished corruption evaluation."""
    from harden.evaluation.report import model_info

    n = len(labels)
    total = sum(int(g.sum()) for g in cells.values())
    count = n * len(cells) * len(SEVERITIES)
    clean_correct = int(clean.sum()) if clean is not None else None
    return {
        "format": CORRUPTION_REPORT_FORMAT, "kind": "corruptions", "threat": "corruptions",
        "threat_model": "corruptions", "model": model_info(model).to_dict(),
        "source": "generated" if generator is not None else "folder",
        "note": generator["note"] if generator is not None else f"read from the images in {(folder or {}).get('root')}",
        "generator": generator, "folder": folder,
        "corruptions": list(cells), "severities": list(SEVERITIES),
        "n": n, "seed": cfg.seed, "batch_size": batch_size,
        "clean_acc": 100 * clean_correct / n if clean_correct is not None else None,
        "clean_correct": clean_correct, "clean_ci95": ci95(clean_correct, n) if clean_correct is not None else None,
        "mean_corruption_acc": 100 * total / count, "mean_corruption_correct": total, "mean_corruption_total": count,
        "mean_corruption_ci95": ci95(total, count),
        "per_type": _per_type(cells), "per_severity": _per_severity(cells), "interval_note": INTERVAL_NOTE,
        "selection": selection,
        "examples": {"indices": indices, "labels": labels, "clean": _bits(clean) if clean is not None else None,
                     "corrupted": {name: [_bits(row) for row in grid] for name, grid in cells.items()}},
        "seconds": round(seconds, 3), "device": device_text(device_of(model)),
        "world_size": hd.world_size(), "created": started.isoformat(timespec="seconds"),
        "versions": versions(LIBRARIES, python=True), "warnings": _warnings(cells, cfg, folder),
    }


def _interval(ci: list[float] | None) -> str:
    return f"{ci[0]:.1f} to {ci[1]:.1f}" if ci else ""


def _header(report: dict[str, Any]) -> list[str]:
    sel, model = report.get("selection") or {}, report["model"]
    types = len(report["corruptions"])
    lines = [f"model    {model.get('label') or model.get('spec')}",
             f"data     {sel.get('data')} ({sel.get('split') or 'all'}, {sel.get('selection', 'first')} {report['n']})"]
    what = f"threat   common corruptions: {types} type{'s' * (types != 1)} x severities 1-5"
    gen = report.get("generator")
    if gen is not None:
        lines += [f"{what}, seed {report['seed']}",
                  f"         {gen['library']} {gen['version']}, {gen['parameters_text']}", f"         {gen['note']}"]
    else:
        lines += [f"{what}", f"         {report['note']}"]
    return lines + [f"device   {report['device']}, batch {report['batch_size']}"]


def corruption_table(report: dict[str, Any]) -> str:
    """The short table ``harden evaluate --threat corruptions`` prints: accuracy by type and severity."""
    head = f"{'corruption':<18}" + "".join(f"{'sev ' + str(s):>7}" for s in SEVERITIES) + f"{'mean':>8}   95% interval"
    lines = [*_header(report), "", head]
    for row in report["per_type"]:
        cells = "".join(f"{c['acc']:>7.1f}" for c in row["per_severity"])
        lines.append(f"{row['corruption']:<18}{cells}{row['acc']:>8.1f}   {_interval(row['ci95'])}")
    cells = "".join(f"{c['acc']:>7.1f}" for c in report["per_severity"])
    lines.append(f"{'all types':<18}{cells}{report['mean_corruption_acc']:>8.1f}   "
                 f"{_interval(report['mean_corruption_ci95'])}")
    lines.append("")
    if report.get("clean_acc") is not None:
        lines.append(f"clean accuracy:            {report['clean_acc']:.2f}%   (95% interval "
                     f"{_interval(report['clean_ci95'])})")
    lines.append(f"mean corruption accuracy:  {report['mean_corruption_acc']:.2f}%   (95% interval "
                 f"{_interval(report['mean_corruption_ci95'])}, pooled)   ({report['seconds']:.1f} s)")
    return "\n".join(lines)
