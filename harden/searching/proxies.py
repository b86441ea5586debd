"""Cheap proxies of robustness, computed before training, and how well they ranked the candidates.

Two proxies need no training: the feature map size before global pooling (Xu et al.: larger is more
robust) and the Lipschitz upper bound of the untrained candidate (Dong et al.: smaller is more
robust). After a search, :func:`rank_agreement` gives the Spearman correlation between each proxy
and the measured robust accuracy, with a 95% interval from the Fisher z transform using the
Fieller-Hartley-Pearson variance ``1.06 / (n - 3)``; below four candidates there is no interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from harden.model import HardenedModel
from harden.stats import Z95

MIN_FOR_INTERVAL = 4
# The sign of a correlation with robust accuracy that would confirm the proxy's claim.
EXPECTED_SIGN = {"feature_map": 1, "lipschitz": -1}


def candidate_proxies(model: HardenedModel, feature_map: tuple[int, int] | None) -> dict[str, float | None]:
    """The proxies of one candidate: feature map area (pixels) and its Lipschitz bound (None if unknown)."""
    from harden.lipschitz import lipschitz_bound

    try:
        bound = float(lipschitz_bound(model, n_iter=20, tol=1e-3).bound)
    except Exception:  # an operation without a bound or an untraceable model: no proxy, not a failure
        bound = None
    if bound is not None and not math.isfinite(bound):
        bound = None
    return {"feature_map": float(feature_map[0] * feature_map[1]) if feature_map else None, "lipschitz": bound}


def _ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks from 1, ties sharing their average rank."""
    a = np.asarray(values, dtype=float)
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(len(a))
    ranks[order] = np.arange(1, len(a) + 1)
    for v in np.unique(a):
        same = a == v
        ranks[same] = ranks[same].mean()
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (Pearson on average ranks); None if either side is constant."""
    rx, ry = _ranks(x), _ranks(y)
    if len(rx) < 2 or rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def spearman_interval(rho: float, n: int) -> tuple[float, float] | None:
    """95% interval of a Spearman correlation from n pairs (Fisher z, variance 1.06/(n-3)); None below 4."""
    if n < MIN_FOR_INTERVAL:
        return None
    z = math.atanh(max(-0.999999, min(0.999999, rho)))
    half = Z95 * math.sqrt(1.06 / (n - 3))
    return math.tanh(z - half), math.tanh(z + half)


def rank_agreement(rows: Sequence[dict[str, Any]], proxy: str) -> dict[str, Any]:
    """How well ``proxy`` ranked ``rows`` (each with ``proxies`` and ``robust_acc``) against measured robustness."""
    pairs = [(r["proxies"][proxy], r["robust_acc"]) for r in rows
             if r.get("proxies", {}).get(proxy) is not None and r.get("robust_acc") is not None]
    n = len(pairs)
    out: dict[str, Any] = {"proxy": proxy, "n": n, "expected_sign": EXPECTED_SIGN.get(proxy), "spearman": None,
                           "ci95": None, "note": None}
    if n < 2:
        out["note"] = f"{n} measured candidate{'s' if n != 1 else ''} with this proxy: no correlation"
        return out
    rho = spearman([p for p, _ in pairs], [a for _, a in pairs])
    if rho is None:
        out["note"] = "the proxy or the robust accuracy is the same for every candidate: no correlation"
        return out
    out["spearman"] = rho
    interval = spearman_interval(rho, n)
    out["ci95"] = list(interval) if interval else None
    if interval is None:
        out["note"] = f"only {n} candidates: too few for an interval (needs {MIN_FOR_INTERVAL})"
    return out


def agreement_text(entry: dict[str, Any]) -> str:
    """One line: ``lipschitz: Spearman -0.40 (95% interval -0.85 to 0.36, n=8; expected negative)``."""
    expected = {1: "expected positive", -1: "expected negative"}.get(entry.get("expected_sign"), "")
    if entry["spearman"] is None:
        return f"{entry['proxy']}: {entry['note']}"
    ci = entry["ci95"]
    inside = f"95% interval {ci[0]:+.2f} to {ci[1]:+.2f}, " if ci else ""
    tail = f"; {entry['note']}" if entry.get("note") else ""
    return f"{entry['proxy']}: Spearman {entry['spearman']:+.2f} ({inside}n={entry['n']}; {expected}){tail}"
