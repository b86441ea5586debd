"""Files written by harden 0.1.0 still load and mean the same under the current code."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import harden
from harden.cli import main
from harden.stats import compare_reports

FIXTURES = Path(__file__).parent / "fixtures" / "v0.1"
MODEL = FIXTURES / "model.safetensors"
REPORT = FIXTURES / "report.json"


def test_old_model_file_loads_with_the_same_logits():
    expected = load_file(FIXTURES / "expected_logits.safetensors")
    model = harden.load(MODEL).eval()
    with torch.no_grad():
        logits = model(expected["x"])
    torch.testing.assert_close(logits, expected["logits"], rtol=1e-4, atol=1e-5)
    assert model.spec == "cifar:wrn-10-1"
    assert model.num_classes == 10


def test_old_model_file_inspects_with_its_transforms_fine_tuning_and_report():
    result = CliRunner().invoke(main, ["inspect", str(MODEL)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "last-stage-width:ratio=0.5" in out
    assert "activation:name=silu" in out
    assert "method pgd, 1 epochs on sample" in out
    assert "reports (1)" in out


def test_old_model_file_replays_onto_a_fresh_base():
    model = harden.load(MODEL)
    fresh = harden.load_model("cifar:wrn-10-1", num_classes=10)
    steps = ["last-stage-width:ratio=0.5", "activation:name=silu"]
    rebuilt = harden.apply(fresh, steps)
    assert sum(p.numel() for p in rebuilt.parameters()) == sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in rebuilt.parameters()) < sum(p.numel() for p in fresh.parameters())


def test_old_report_still_compares():
    report = json.loads(REPORT.read_text())
    result = compare_reports(report, report)
    assert result["n"] == 16
    cli = CliRunner().invoke(main, ["compare", str(REPORT), str(REPORT)])
    assert cli.exit_code == 0, cli.output
