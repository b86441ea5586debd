"""Crash consistency: ``kill -9`` at a seeded random moment, then resume, gives an uninterrupted run's result.

Each test runs the command once to the end (the reference), once killed with SIGKILL a seeded random
time after it has saved its first progress (a checkpoint, a progress file, a finished stage), and
once more to resume it. The resumed result must equal the reference bit for bit, and a finished run
leaves no temporary files beside its outputs, not even those of the killed writer.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.cli_contract import stray_files

ROOT = Path(__file__).resolve().parent.parent
MODEL = ["tests.tiny_models:tiny_cnn", "--num-classes", "10", "--input-size", "32"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

pytestmark = pytest.mark.slow


def _harden(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "harden.cli", *map(str, args)], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def _kill_after_progress(args: list[str], cwd: Path, started: Callable[[], bool], seed: int) -> bool:
    """Run ``harden ARGS`` and SIGKILL it a seeded random 0-1.5 s after ``started()`` holds.

    Returns whether the kill landed (False when the command finished first)."""
    proc = subprocess.Popen([sys.executable, "-m", "harden.cli", *map(str, args)], cwd=cwd, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not started() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(random.Random(seed).uniform(0.0, 1.5))
        if proc.poll() is not None:
            return False
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        return True
    finally:
        if proc.poll() is None:
            proc.kill()


def _untimed(value: object) -> object:
    """``value`` without wall-clock fields (seconds, dates), which differ between any two runs."""
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if not any(w in k for w in ("second", "time", "started"))}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


def _same_tensors(a: Path, b: Path) -> None:
    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys()
    for k in ta:
        assert ta[k].equal(tb[k]), k


@pytest.mark.parametrize("seed", [0])
def test_finetune_killed_then_resumed_equals_an_uninterrupted_run(tmp_path, seed) -> None:
    # long enough (about 1 s an epoch) that the kill, at most 1.5 s after the first checkpoint, lands mid-run
    common = [*MODEL, "--data", "sample", "--method", "fgsm-rs", "--epochs", "6", "--train-n", "1536",
              "--batch-size", "64", "--val-n", "64", "--val-steps", "2", "--quiet"]
    ref, out = tmp_path / "ref" / "m.safetensors", tmp_path / "run" / "m.safetensors"
    _harden(["finetune", *common, "-o", ref], tmp_path)
    out.parent.mkdir()
    ckpt = out.parent / "m.ckpt.pt"
    killed = _kill_after_progress(["finetune", *common, "-o", out], tmp_path, ckpt.exists, seed)
    assert killed and not out.exists()
    _harden(["finetune", *common, "-o", out, "--resume"], tmp_path)
    _same_tensors(ref, out)
    assert not stray_files(out.parent) and not ckpt.exists()


@pytest.mark.parametrize("seed", [1])
def test_evaluate_killed_then_resumed_equals_an_uninterrupted_run(tmp_path, seed) -> None:
    common = [*MODEL, "--data", "sample", "--attack", "apgd-ce", "-n", "96", "--batch-size", "8", "--eps", "2/255",
              "--random-subset", "-q"]
    ref, report = tmp_path / "ref.json", tmp_path / "run" / "r.json"
    _harden(["evaluate", *common, "--report", ref], tmp_path)
    report.parent.mkdir()
    progress = Path(f"{report}.progress")
    killed = _kill_after_progress(["evaluate", *common, "--report", report], tmp_path, progress.exists, seed)
    assert killed and not report.exists()
    _harden(["evaluate", *common, "--report", report, "--resume"], tmp_path)
    a, b = json.loads(ref.read_text()), json.loads(report.read_text())
    assert b.get("resumed") and a["examples"] == b["examples"]
    assert (a["clean_acc"], a["robust_acc"], a["per_attack"][-1]["correct"]) == \
        (b["clean_acc"], b["robust_acc"], b["per_attack"][-1]["correct"])
    assert not stray_files(report.parent) and not progress.exists()


RECIPE = """\
name: crash
model: {spec: tests.tiny_models:tiny_cnn, num_classes: 10, input_size: 32}
data: {train: sample}
transforms: [activation:name=silu]
finetune: {method: fgsm-rs, eps: 8/255, epochs: 2, lr: 0.05, train_n: 384, batch_size: 64, val_n: 64, val_steps: 2}
evaluate: {attacks: [pgd], steps: 3, n: 64}
"""


@pytest.mark.parametrize("seed", [2])
def test_run_killed_then_resumed_equals_an_uninterrupted_run(tmp_path, seed) -> None:
    recipe = tmp_path / "crash.yaml"
    recipe.write_text(RECIPE)
    ref, out = tmp_path / "ref", tmp_path / "run"
    _harden(["run", recipe, "--out", ref, "--quiet"], tmp_path)
    state = out / "run-state.json"
    killed = _kill_after_progress(["run", recipe, "--out", out, "--quiet"], tmp_path, state.exists, seed)
    assert killed and not (out / "comparison.md").exists()
    _harden(["run", recipe, "--out", out, "--quiet", "--resume"], tmp_path)
    models = sorted(p.name for p in ref.glob("*.safetensors"))
    assert models and models == sorted(p.name for p in out.glob("*.safetensors"))
    for name in models:
        _same_tensors(ref / name, out / name)
    rows = [_untimed(json.loads((d / "comparison.json").read_text())["rows"]) for d in (ref, out)]
    assert rows[0] == rows[1]
    assert not stray_files(out) and not list(out.glob("*.ckpt.pt")) and not list(out.glob("*.progress"))
