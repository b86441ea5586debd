"""benchmarks/attack_check.py: the evidence table's models attacked again, beside the table's own attack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harden.stats import mcnemar_exact_p
from tests.helpers import import_benchmark


def _row(index: int, weaker: list[str], stronger: list[str]) -> dict:
    n = len(weaker)
    broke = sum(w == "robust" and s != "robust" for w, s in zip(weaker, stronger))
    held = sum(w != "robust" and s == "robust" for w, s in zip(weaker, stronger))
    return {"index": index, "row": f"row {index}", "weaker": "apgd-ce", "weaker_outcome": weaker,
            "robust_only_under_stronger": held,
            "weaker_robust": 100 * weaker.count("robust") / n, "outcome": stronger, "gap": 100 * broke / n,
            "robust_acc": 100 * stronger.count("robust") / n, "clean_acc": 50.0, "warnings": []}


def test_gap_rule_differences_and_order_are_read_off_the_outcomes() -> None:
    check = import_benchmark("attack_check")
    r, m, a = "robust", "misclassified", "apgd-t"
    base = _row(0, [r] * 10 + [m] * 10, [r] * 9 + [a] + [m] * 10)  # gap 5 points
    same = _row(1, [r] * 10 + [m] * 10, [r] * 9 + [a] + [m] * 10)
    masked = _row(2, [r] * 14 + [m] * 6, [r] * 8 + [a] * 6 + [m] * 6)  # looks better, gap 30 points
    summary = check.summarize([masked, base, same])
    assert summary["flagged"] == [2] and not same["flagged"]
    vs = masked["vs_baseline"]
    assert vs["weaker"]["difference"] == 20.0 and vs["weaker"]["only_row"] == 4 and vs["weaker"]["only_baseline"] == 0
    assert vs["stronger"]["difference"] == -5.0
    assert vs["stronger"]["p_value"] == mcnemar_exact_p(vs["stronger"]["only_baseline"], vs["stronger"]["only_row"])
    assert summary["spearman"] is not None and summary["spearman"] < 0  # the masked row swaps places
    doc = {"attack": "autoattack-fast", "n": 20, "eps": "8/255", "seed": 0, "table": "t.json", "model": "m",
           "protocol": "cpu", "eval_seed": 0, "device": "CPU", "rows": [base, same, masked], "summary": summary,
           "pieces": [{"date": "2026-12-04", "command": "python benchmarks/attack_check.py"}]}
    text = check.markdown(doc)
    assert "autoattack-fast vs apgd-ce, Linf 8/255, n=20" in text and "30.0 **flagged**" in text
    assert "flagged: rows 2" in text and "| 0. row 0 | 50.0 | 50.0 | 45.0 | 5.0 | 0.0 | — | — | none |" in text
    assert "overstates robust accuracy by 0.0 (row 0) to 0.0 points (row 2)" in text


def test_a_weaker_check_attack_shows_what_it_overstates() -> None:
    check = import_benchmark("attack_check")
    r, m = "robust", "misclassified"
    base = _row(0, [r] * 10 + [m] * 10, [r] * 11 + [m] * 9)  # PGD leaves 1 image the table's attack breaks
    smooth = _row(3, [r] * 6 + [m] * 14, [r] * 10 + [m] * 10)  # PGD leaves 4 more: 20 points overstated
    doc = {"attack": "pgd", "n": 20, "eps": "0.1", "seed": 0, "table": "t.json", "model": "m", "protocol": "fmnist",
           "eval_seed": 0, "device": "CPU", "rows": [base, smooth], "summary": check.summarize([base, smooth]),
           "pieces": [{"date": "2026-12-07", "command": "python benchmarks/attack_check.py --attack pgd"}]}
    text = check.markdown(doc)
    assert "| 3. row 3 | 50.0 | 30.0 | 50.0 | 0.0 | 20.0 |" in text
    assert "pgd overstates robust accuracy by 5.0 (row 0) to 20.0 points (row 3) against apgd-ce" in text


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_models_of_a_table_are_attacked_again_and_merged_by_row(tmp_path: Path) -> None:
    table, work = tmp_path / "table.md", tmp_path / "work"
    res = _run("benchmarks/reproduce.py", "--quick", "--data", "sample", "--work", str(work), "--out", str(table),
               "--rows", "0,3", "--seeds", "0")
    assert res.returncode == 0, res.stderr[-2000:]
    common = ["benchmarks/attack_check.py", "--protocol", "quick", "--table", str(table.with_suffix(".json")),
              "--work", str(work), "--out", str(tmp_path / "check.md"), "--attack", "autoattack-fast"]
    res = _run(*common, "--n", "8")
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads((tmp_path / "check.json").read_text())
    measured = json.loads(table.with_suffix(".json").read_text())
    assert [r["index"] for r in doc["rows"]] == [0, 3] and doc["n"] == 8 and doc["attack"] == "autoattack-fast"
    for row, kept in zip(doc["rows"], measured["rows"]):
        assert row["weaker_outcome"] == kept["seeds"][0]["outcome"][:8] and row["attacks"] == ["apgd-ce", "apgd-t"]
        held = sum(o == "robust" for o in row["weaker_outcome"]) - row["broken_only_by_stronger"]
        assert sum(o == "robust" for o in row["outcome"]) == held + row["robust_only_under_stronger"]
    assert "vs_baseline" in doc["rows"][1] and "(n=8)" in (tmp_path / "check.md").read_text()

    res = _run(*common, "--n", "8", "--rows", "3", "--merge")
    assert res.returncode == 0, res.stderr[-2000:]
    again = json.loads((tmp_path / "check.json").read_text())
    assert [r["index"] for r in again["rows"]] == [0, 3] and len(again["pieces"]) == 2

    for extra, message, code in ((["--n", "9"], "more than the table's 8 images", 2),
                                 (["--n", "4", "--merge"], "measured with other n", 1),
                                 (["--n", "8", "--seed", "5"], "has no seed 5", 1)):
        res = _run(*common, *extra)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == code and len(lines) == 1 and message in lines[0], res.stderr
    for model in (work / "quick").glob("row3-*-seed0.safetensors"):
        model.unlink()
    res = _run(*common, "--n", "8", "--rows", "3")
    assert res.returncode == 1 and "row 3 seed 0: no model at" in res.stderr
    assert json.loads((tmp_path / "check.json").read_text()) == again  # a failed run leaves the file as it was
