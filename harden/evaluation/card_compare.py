"""``harden compare CARD_A/ CARD_B/``: two report cards compared threat by threat, paired on the same images.

An adversarial threat is compared with :func:`harden.stats.compare_reports` (the robust row: images only one
model withstands, exact McNemar p). Corruptions are paired cell by cell: each (image, type, severity) outcome
bit the corruption report stores, when both cards corrupted the same images with the same seed and types.
The cells of one image are not independent, so that p-value is optimistic; the card says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harden.errors import UsageError
from harden.stats import compare_reports, paired_difference

CORRUPTION_NOTE = ("corruptions: paired per (image, type, severity) cell; the cells of one image are not independent, "
                   "so the p-value is optimistic")


def read_card(folder: str | Path) -> dict[str, Any]:
    """``card.json`` of a card folder, or a one-line :class:`UsageError`."""
    path = Path(folder) / "card.json"
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError):
        raise UsageError(f"no report card in '{folder}' (card.json missing or unreadable); write one with "
                         "`harden evaluate MODEL --threats ... --out-card DIR`") from None
    if not isinstance(card, dict) or card.get("format") != "harden.card/1":
        raise UsageError(f"'{path}' is not a harden.card/1 report card")
    return card


def _report(folder: str | Path, entry: dict[str, Any]) -> dict[str, Any]:
    path = Path(folder) / entry["file"]
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise UsageError(f"the card in '{folder}' lacks its report {entry['file']}") from None


def _corruption_bits(report: dict[str, Any]) -> list[bool]:
    grid = report["examples"]["corrupted"]
    return [c == "1" for name in report["corruptions"] for row in grid[name] for c in row]


def compare_corruptions(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Paired comparison of two corruption reports, or a UsageError naming what differs."""
    differ = [k for k in ("corruptions", "seed", "source") if a.get(k) != b.get(k)]
    ea, eb = a.get("examples") or {}, b.get("examples") or {}
    data_a, data_b = (a.get("selection") or {}).get("data"), (b.get("selection") or {}).get("data")
    if ea.get("indices") != eb.get("indices") or data_a != data_b:
        differ.append("test images")
    if differ:
        raise UsageError(f"the corruption reports are not paired: they differ in {', '.join(differ)}")
    return paired_difference(_corruption_bits(a), _corruption_bits(b))


def compare_cards(folder_a: str | Path, folder_b: str | Path) -> dict[str, Any]:
    """Each threat of card A also in card B, compared paired; the others listed as not compared."""
    a, b = read_card(folder_a), read_card(folder_b)
    in_b = {e["threat"]: e for e in b["threats"]}
    rows: list[dict[str, Any]] = []
    for entry in a["threats"]:
        name = entry["threat"]
        if name not in in_b:
            rows.append({"threat": name, "skipped": "only in A"})
            continue
        ra, rb = _report(folder_a, entry), _report(folder_b, in_b[name])
        try:
            if entry["kind"] == "corruptions":
                diff, paired = compare_corruptions(ra, rb), "cells"
            else:
                diff, paired = compare_reports(ra, rb)["robust"], "images"
        except UsageError as exc:
            rows.append({"threat": name, "skipped": str(exc)})
            continue
        rows.append({"threat": name, "paired_on": paired, **diff})
    rows += [{"threat": n, "skipped": "only in B"} for n in in_b if n not in {e["threat"] for e in a["threats"]}]
    return {"a": str(folder_a), "b": str(folder_b), "model_a": a["model"], "model_b": b["model"], "threats": rows,
            "note": CORRUPTION_NOTE}


def card_comparison_table(result: dict[str, Any]) -> str:
    """One line per threat: accuracy of A and B, B - A, the discordant counts and the exact p."""
    head = f"{'threat':<12} {'A':>8} {'B':>8} {'B - A':>8} {'only A':>7} {'only B':>7} {'p (exact)':>10}  paired on"
    lines = [head]
    for r in result["threats"]:
        if "skipped" in r:
            lines.append(f"{r['threat']:<12} not compared: {r['skipped']}")
            continue
        lines.append(f"{r['threat']:<12} {r['acc_a']:>7.2f}% {r['acc_b']:>7.2f}% {r['difference']:>+8.2f} "
                     f"{r['only_a']:>7} {r['only_b']:>7} {r['p_value']:>10.3g}  {r['n']} {r['paired_on']}")
    lines += ["", "only A / only B: images (cells) that only that model withstands; p: two-sided exact McNemar test",
              result["note"]]
    return "\n".join(lines)
