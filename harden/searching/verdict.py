"""A search that knows noise: every candidate paired with the base on the same images, and a confirmed winner.

Each measured trial's kept model is attacked again (PGD, the validation settings) on the held-out
training images of the study's seed, image by image, so that every candidate's robust accuracy is
compared with the base's on the same images (:func:`pair_with_base`). Before naming a winner, the best
front candidates and the base are trained again with a second seed and measured on twice as many
held-out images (:func:`confirm`). The rule, printed with the verdict:

    a candidate beats the base when its robust accuracy is higher with an exact McNemar p < 0.05 in
    both measurements (the study's seed, then the second seed on more images); the winner is the one
    with the largest mean difference among those that beat it; with none, the verdict is "keep the base".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from harden.stats import Z95, paired_difference

ALPHA = 0.05
RULE = ("a candidate beats the base when its robust accuracy is higher with exact McNemar p < 0.05 in both the "
        "study's measurement and a second seed's on twice as many held-out images")


def paired_interval(only_a: int, only_b: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% interval (Wald, paired proportions) of B's accuracy minus A's, in points."""
    d = (only_b - only_a) / n
    var = max(0.0, (only_a + only_b) / n - d * d) / n
    half = z * math.sqrt(var)
    return 100 * (d - half), 100 * (d + half)


def outcome_text(robust: Sequence[bool]) -> str:
    """Per-image robustness as a compact string ('1' robust, '0' not), as the study stores it."""
    return "".join("1" if r else "0" for r in robust)


def compare(base: str, other: str) -> dict[str, Any]:
    """``other``'s robust accuracy minus ``base``'s on the same images, with its interval and exact p."""
    d = paired_difference([c == "1" for c in base], [c == "1" for c in other])
    lo, hi = paired_interval(d["only_a"], d["only_b"], d["n"])
    return {"difference": round(d["difference"], 2), "ci95": [round(lo, 2), round(hi, 2)],
            "p_value": d["p_value"], "only_base": d["only_a"], "only_candidate": d["only_b"], "n": d["n"]}


def pair_with_base(rows: Sequence[dict[str, Any]]) -> None:
    """Give every row a ``vs_base`` paired comparison with the base row (no transforms) when both have outcomes."""
    base = next((r for r in rows if not r["transforms"] and r.get("val_outcome")), None)
    for r in rows:
        r.pop("vs_base", None)
        if base is not None and r is not base and r.get("val_outcome") and len(r["val_outcome"]) == \
                len(base["val_outcome"]):
            r["vs_base"] = compare(base["val_outcome"], r["val_outcome"])


def beats(first: dict[str, Any] | None, second: dict[str, Any] | None) -> bool:
    """The rule: higher with p < ALPHA in both measurements."""
    return all(c is not None and c["difference"] > 0 and c["p_value"] < ALPHA for c in (first, second))


def decide(candidates: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The verdict over confirmed candidates (each with ``vs_base`` and ``confirmation``): winner or keep the base."""
    winners = [c for c in candidates if beats(c.get("vs_base"), c.get("confirmation"))]
    if not winners:
        return {"verdict": "keep the base", "trial": None, "rule": RULE,
                "candidates": [c["trial"] for c in candidates]}
    best = max(winners, key=lambda c: (c["vs_base"]["difference"] + c["confirmation"]["difference"]) / 2)
    return {"verdict": "winner", "trial": best["trial"], "transforms": best["transforms"], "rule": RULE,
            "candidates": [c["trial"] for c in candidates]}


def to_confirm(rows: Sequence[dict[str, Any]], top: int) -> list[dict[str, Any]]:
    """The front candidates worth confirming: transforms, higher than the base in the study, best first."""
    front = [r for r in rows if r["pareto"] and r["transforms"] and r.get("vs_base", {}).get("difference", 0) > 0]
    return sorted(front, key=lambda r: -r["robust_acc"])[:top]


def confirm(rows: Sequence[dict[str, Any]], measure: Callable[[list[str]], str], *, top: int,
            echo: Callable[[str], Any]) -> dict[str, Any]:
    """Measure the base and the top candidates again with ``measure`` (transforms -> per-image outcome string on
    the second seed's images), attach each candidate's ``confirmation`` and return the verdict."""
    chosen = to_confirm(rows, top)
    if not chosen:
        echo("verdict: keep the base (no front candidate was above the base in the study)")
        return decide([])
    echo(f"confirming {len(chosen)} candidate(s) against the base with a second seed on more images ...")
    base_outcome = measure([])
    for r in chosen:
        r["confirmation"] = compare(base_outcome, measure(r["transforms"]))
    verdict = decide(chosen)
    echo(verdict_text(verdict, rows))
    return verdict


def verdict_text(verdict: dict[str, Any], rows: Sequence[dict[str, Any]]) -> str:
    """The verdict line the search prints, with its rule."""
    if verdict["verdict"] != "winner":
        return f"verdict: keep the base; no candidate passed the rule ({verdict['rule']})"
    row = next(r for r in rows if r["trial"] == verdict["trial"])
    first, second = row["vs_base"], row["confirmation"]
    return (f"verdict: trial {row['trial']} ({', '.join(row['transforms'])}) beats the base: "
            f"{first['difference']:+.1f} points (p={first['p_value']:.2g}), confirmed {second['difference']:+.1f} "
            f"(p={second['p_value']:.2g}) ({verdict['rule']})")
