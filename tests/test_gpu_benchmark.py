"""benchmarks/gpu.py: the one-command GPU run, checked end to end at toy size on the CPU (--dry-run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import import_benchmark


def _reproduce_rows() -> list:
    return import_benchmark("protocols").ROWS


def test_the_rows_epochs_fit_the_minutes_left() -> None:
    fit_epochs = import_benchmark("gpu").fit_epochs
    costs = [1, 4, 3, 1, 0.8, 1, 1]  # 11.8 baseline rows, +0.5 for the clean pre-training
    # 0.85 * 600 - 5 * 11.8 = 451 s for training; 10 s per baseline epoch -> 123 s per epoch of all rows
    assert fit_epochs(600, costs, epoch_s=10, eval_s=5, cap=15) == 3
    assert fit_epochs(60, costs, epoch_s=10, eval_s=5, cap=15) == 1  # never fewer than one epoch
    assert fit_epochs(1e6, costs, epoch_s=10, eval_s=5, cap=15) == 15  # never more than the reference's 15


@pytest.mark.slow
def test_gpu_script_dry_run_exercises_every_step_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "benchmarks/gpu.py", "--dry-run", "--out-dir", str(out), "--work",
                          str(tmp_path / "work")], capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stderr[-3000:]
    fig = json.loads((out / "gpu-dry-run.json").read_text())
    assert fig["dry_run"] and fig["command"].startswith("python benchmarks/gpu.py --dry-run") and fig["date"]
    steps = fig["steps"]
    assert list(steps) == ["paths", "throughput", "autoattack", "rows"]
    paths = steps["paths"]
    assert paths["bf16"] and paths["channels_last"] and paths["compile"] and paths["ddp_backend"] == "gloo"
    assert paths["deterministic_identical"] and paths["resident_uint8"] == "cpu" and paths["auto_batch_size"] == 4
    assert set(steps["throughput"]["images_per_second"]) == {"reference", "reference-gpu-data", "harden",
                                                             "harden-compile"}
    assert steps["autoattack"]["fast"]["n"] == 4 and steps["autoattack"]["standard"]["n"] == 4
    every_row = list(range(len(_reproduce_rows())))  # the GPU protocol's rows, the fine-tuning methods' included
    assert sorted(steps["rows"]["rows_run"]) == every_row and steps["rows"]["rows_skipped_for_time"] == []
    table = json.loads(next(out.glob("evidence-gpu-fit-*.json")).read_text())
    assert [r["index"] for r in table["rows"]] == every_row
    assert all(r["seeds"][0]["check"]["attack"] == "autoattack-fast" for r in table["rows"])
    assert table["rows"][6]["seeds"][0]["vs_reference"]["row"] == 5
    assert [table["rows"][i]["seeds"][0]["vs_reference"]["row"] for i in (8, 9)] == [7, 7]  # AWP, MART vs TRADES
