"""How sure a measured accuracy is, and whether two models really differ on the same test images.

An accuracy measured on ``n`` test images is a binomial proportion: :func:`wilson_interval` gives
its confidence interval (the Wilson score interval, which behaves at 0% and 100% and on small
``n``, unlike the normal approximation). Two models evaluated on the *same* images differ only where
exactly one of them is right; :func:`paired_difference` counts those images and tests them with the
exact McNemar test (a two-sided binomial test of the discordant images at p = 1/2), which is much
more sensitive than comparing two intervals. :func:`compare_reports` applies both to two
``harden evaluate`` reports, after checking that they measured the same thing.

Both speak of the test images only: they say whether *these two trained models* differ, not whether
another training run (another seed) would give the same difference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from harden.errors import UsageError

if TYPE_CHECKING:
    from harden.evaluation.report_types import EvaluationReport

Z95 = 1.959963984540054  # the two-sided 95% quantile of the standard normal


def wilson_interval(correct: int, n: int, *, z: float = Z95) -> tuple[float, float]:
    """The 95% (by default) Wilson score interval of ``correct / n``, in percent."""
    if n <= 0:
        raise ValueError("an interval needs at least one example")
    if not 0 <= correct <= n:
        raise ValueError(f"correct must be between 0 and n={n}, got {correct}")
    p = correct / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return 100 * max(0.0, centre - half), 100 * min(1.0, centre + half)


def ci95(correct: int, n: int) -> list[float]:
    """:func:`wilson_interval` of ``correct / n`` as an evaluation report stores it: a list, 3 decimals."""
    return [round(v, 3) for v in wilson_interval(correct, n)]


def mcnemar_exact_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the two discordant counts (1.0 when there are none)."""
    m = only_a + only_b
    if m == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(m, i) for i in range(k + 1)) / 2**m  # integers: exact for any m (2.0**m overflows)
    return min(1.0, 2 * tail)


def paired_difference(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> dict[str, Any]:
    """Compare two models' per-image correctness on the same images: counts, difference, exact p."""
    if len(correct_a) != len(correct_b) or not correct_a:
        raise ValueError("paired comparison needs two equally long, non-empty lists")
    n = len(correct_a)
    only_a = sum(1 for a, b in zip(correct_a, correct_b) if a and not b)
    only_b = sum(1 for a, b in zip(correct_a, correct_b) if b and not a)
    acc_a, acc_b = 100 * sum(map(bool, correct_a)) / n, 100 * sum(map(bool, correct_b)) / n
    return {"n": n, "acc_a": acc_a, "acc_b": acc_b, "difference": acc_b - acc_a, "only_a": only_a,
            "only_b": only_b, "p_value": mcnemar_exact_p(only_a, only_b)}


def _correct(report: EvaluationReport) -> tuple[list[bool], list[bool]]:
    outcome = report.outcome
    if "pending" in outcome:
        raise UsageError("a report of an unfinished evaluation cannot be compared; finish it with --resume")
    return [o != "misclassified" for o in outcome], [o == "robust" for o in outcome]


def _attack_text(report: EvaluationReport) -> str:
    if report.attack == "autoattack":
        return f"AutoAttack ({report.version or 'standard'})"
    return ", ".join(report.attacks or [report.attack]).upper()


def _paired_report(report: EvaluationReport | Mapping[str, Any], name: str) -> EvaluationReport:
    """``report`` as a typed report with per-example outcomes, or a UsageError naming the ``name`` report."""
    from harden.evaluation.report_types import EvaluationReport, ReportError

    try:
        typed = EvaluationReport.of(report)
    except ReportError as exc:
        raise UsageError(f"the {name} report is not an evaluation report ({exc})") from None
    if typed.examples is None:
        raise UsageError(f"the {name} report has no per-example outcomes; compare the JSON reports that "
                         "`harden evaluate --report` (or `harden run`) writes")
    return typed


def _differences(a: EvaluationReport, b: EvaluationReport) -> list[str]:
    """What two reports did not measure alike: images, labels, norm, eps, attack."""
    ea, eb = a.examples, b.examples
    assert ea is not None and eb is not None
    differ = []
    if ea.indices != eb.indices or a.selection.get("data") != b.selection.get("data"):
        differ.append("test images")
    elif ea.labels != eb.labels:
        differ.append("labels")
    if a.norm != b.norm:
        differ.append("norm")
    if not math.isclose(a.eps, b.eps, rel_tol=1e-9):
        differ.append("eps")
    if _attack_text(a) != _attack_text(b):
        differ.append(f"attack ({_attack_text(a)} against {_attack_text(b)})")
    return differ


def compare_reports(a: EvaluationReport | Mapping[str, Any], b: EvaluationReport | Mapping[str, Any]) -> dict[str, Any]:
    """Paired clean and robust comparison of two evaluation reports (or their JSON) of the same images and threat.

    Raises a one-line :class:`UsageError` naming what differs when the reports are not comparable
    (other images, labels, norm, eps or attack), or when one lacks its per-example outcomes.
    """
    ra, rb = _paired_report(a, "first"), _paired_report(b, "second")
    differ = _differences(ra, rb)
    if differ:
        raise UsageError(f"the reports are not paired: they differ in {', '.join(differ)}; evaluate both models "
                         "with the same data, -n, --seed, --random-subset, attack, norm and eps")
    clean_a, robust_a = _correct(ra)
    clean_b, robust_b = _correct(rb)
    return {"n": len(clean_a), "norm": ra.norm, "eps_text": ra.eps_text, "attack": _attack_text(ra),
            "clean": paired_difference(clean_a, clean_b), "robust": paired_difference(robust_a, robust_b)}


def comparison_table(result: dict[str, Any], name_a: str = "A", name_b: str = "B") -> str:
    """:func:`compare_reports`' result as the small table ``harden compare`` prints."""
    head = f"{'':<8} {name_a[:10]:>10} {name_b[:10]:>10} {'B - A':>8} {'only A':>7} {'only B':>7} {'p (exact)':>10}"
    lines = [f"paired on the same {result['n']} images; {result['norm']} eps {result['eps_text']}; "
             f"attack {result['attack']}", "", head]
    for key in ("clean", "robust"):
        d = result[key]
        lines.append(f"{key:<8} {d['acc_a']:>9.2f}% {d['acc_b']:>9.2f}% {d['difference']:>+8.2f} {d['only_a']:>7} "
                     f"{d['only_b']:>7} {d['p_value']:>10.3g}")
    lines += ["", "only A / only B: images that only that model gets right (clean) or withstands (robust)",
              "p: two-sided exact McNemar test on those images (it covers the choice of test images, not training "
              "noise)"]
    return "\n".join(lines)
