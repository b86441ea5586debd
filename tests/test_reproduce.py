"""The reduced CPU version of benchmarks/reproduce.py runs end to end and writes an honest table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_reduced_reproduction_writes_the_table(tmp_path: Path) -> None:
    out = tmp_path / "table.md"
    res = subprocess.run(
        [sys.executable, "benchmarks/reproduce.py", "--quick", "--data", "sample", "--rows", "0,2",
         "--work", str(tmp_path / "work"), "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    text = out.read_text()
    assert "| baseline |" in text and "| strides 1122 (Xu et al., rcm) |" in text
    assert "PGD-1" in text and "AutoAttack" not in text, "a reduced run must not call its number AutoAttack"
    assert "device:" in text and "n=8" in text
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert [r["feature_map"] for r in rows] == ["4x4", "8x8"]
    assert rows[1]["macs"] > rows[0]["macs"]
    assert all(0 <= r["robust_acc"] <= r["clean_acc"] <= 100 for r in rows)
