"""The reduced CPU version of benchmarks/reproduce.py runs end to end and writes an honest table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def _reproduce(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "benchmarks/reproduce.py", "--quick", "--data", "sample", "--work", str(tmp_path / "work"),
         "--out", str(tmp_path / "table.md"), *args], capture_output=True, text=True, timeout=600)


def test_reduced_reproduction_writes_the_table_in_pieces(tmp_path: Path) -> None:
    out = tmp_path / "table.md"
    res = _reproduce(tmp_path, "--rows", "2")
    assert res.returncode == 0, res.stderr[-2000:]
    res = _reproduce(tmp_path, "--rows", "0", "--merge")  # the second piece joins the first, in row order
    assert res.returncode == 0, res.stderr[-2000:]
    text = out.read_text()
    assert "--rows 2`" in text and "--rows 0 --merge`" in text and "(reduced CPU check)" in text
    assert "| baseline |" in text and "| strides 1122 (Xu et al., rcm) |" in text
    assert "PGD-1" in text and "AutoAttack" not in text, "a reduced run must not call its number AutoAttack"
    assert "device:" in text and "n=8" in text and "exact McNemar" in text
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert [r["feature_map"] for r in rows] == ["4x4", "8x8"]
    assert rows[1]["macs"] > rows[0]["macs"]
    assert len(rows[0]["outcome"]) == 8 and "| - |" in text and "(p=" in text  # the strides row paired with baseline
    assert all(0 <= r["robust_acc"] <= r["clean_acc"] <= 100 for r in rows)


def test_merge_refuses_a_table_measured_with_other_settings(tmp_path: Path) -> None:
    (tmp_path / "table.json").write_text(json.dumps({"model": "cifar:resnet18", "data": "sample", "settings": {},
                                                     "device": "elsewhere", "rows": []}))
    res = _reproduce(tmp_path, "--rows", "0", "--merge")
    assert res.returncode == 1 and res.stderr.strip().splitlines()[-1].startswith(
        f"error: --merge: '{tmp_path / 'table.json'}' was measured with other settings, device;")
    res = _reproduce(tmp_path, "--rows", "7")
    assert res.returncode == 1 and "--rows takes numbers from 0 to 4" in res.stderr


def test_a_smaller_budget_is_named_in_the_title() -> None:
    benchmarks = str(Path(__file__).resolve().parent.parent / "benchmarks")
    sys.path.insert(0, benchmarks)
    try:
        from reproduce import FULL, kind_of_run
    finally:
        sys.path.remove(benchmarks)
    assert kind_of_run(dict(FULL), quick=False) == "full protocol"
    assert kind_of_run({**FULL, "epochs": 5, "train_n": 10000}, quick=False) == (
        "reduced budget: epochs 5 instead of 30, train_n 10000 instead of all")
