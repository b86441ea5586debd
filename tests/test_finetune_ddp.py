"""Two CPU processes under torchrun (gloo): DistributedDataParallel fine-tuning writes one output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harden.serialization import read_provenance

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_two_process_ddp_finetune_writes_one_output(tmp_path) -> None:
    out = tmp_path / "ddp.safetensors"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "harden.cli", "finetune", "tests.tiny_models:tiny_cnn", "--num-classes", "10", "--input-size", "32",
           "--data", "sample", "-o", str(out), "--method", "pgd", "--steps", "2", "--epochs", "2",
           "--train-n", "256", "--batch-size", "32", "--val-n", "64", "--val-steps", "2", "--json"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HARDEN_PROGRESS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # rank 0 alone writes: the model and its curves, no temporary or checkpoint files left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp.curves.png", "ddp.safetensors"]
    entry = read_provenance(out).finetune
    assert entry.world_size == 2 and entry.epochs_run == 2 and entry.train_n == 256
    # rank 0 alone prints: one JSON document, one progress bar per epoch
    printed = json.loads(proc.stdout)
    assert printed["world_size"] == 2 and printed["validation"]["n"] == 64
    assert proc.stderr.count("epoch 1/2:   0%") == 1 and proc.stderr.count("epoch 2/2:   0%") == 1
    assert "robust=" in proc.stderr and "Warning" not in proc.stderr
