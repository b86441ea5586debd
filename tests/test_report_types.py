"""The typed evaluation report: the JSON harden wrote before it was typed reads back unchanged, and every
reader works on it, on its JSON as a dict and on a report of harden 0.1.0."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import harden
from harden.attacks import attack_label
from harden.cli import main
from harden.cli.apply import _report_line
from harden.evaluation import (
    AttackRow,
    EvaluationReport,
    ModelInfo,
    ReportError,
    ReportWarning,
    SweepRow,
    plot_sweep,
    summary_table,
    sweep_table,
)
from harden.recipes.compare import comparison_row
from harden.stats import compare_reports
from harden.tracking import report_metrics, report_params

FIXTURES = Path(__file__).parent / "fixtures"
CURRENT = sorted((FIXTURES / "reports").glob("*.json"))  # written by harden before the report was typed
OLD = FIXTURES / "v0.1" / "report.json"  # written by harden 0.1.0
# what differs between two runs of the same evaluation
VOLATILE = {"seconds", "attack_seconds", "created", "device", "versions"}


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def _key_order(value: Any) -> Any:
    if isinstance(value, dict):
        return [(k, _key_order(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [_key_order(v) for v in value]
    return None


@pytest.mark.parametrize("path", [*CURRENT, OLD], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_reports_read_back_byte_for_byte(path: Path) -> None:
    text = path.read_text()
    report = EvaluationReport.from_dict(json.loads(text))
    assert report.to_dict() == json.loads(text)
    assert json.dumps(report.to_dict(), indent=2) + "\n" == text  # what --report writes: same keys, order, values
    assert EvaluationReport.from_dict(report.to_dict()) == report


def test_the_fixtures_cover_the_optional_parts() -> None:
    reports = {p.stem: EvaluationReport.from_dict(_read(p)) for p in CURRENT}
    pgd, sweep = reports["pgd"], reports["eps-sweep"]
    few, standard = reports["autoattack-fast-3-classes"], reports["autoattack-standard"]
    assert pgd.model.normalization is not None and pgd.model.normalization.name == "CIFAR-10"
    assert pgd.steps == 2 and pgd.version is None and pgd.autoattack_acc is None
    assert pgd.selection["selection"] == "random"
    assert isinstance(pgd.per_attack[1], AttackRow) and pgd.per_attack[1].attacked is not None
    assert pgd.per_attack[0].attacked is None
    assert sweep.eps_sweep and isinstance(sweep.eps_sweep[0], SweepRow) and sweep.eps_sweep[0].eps_text == "0"
    assert few.model == ModelInfo(spec="Sequential") and few.version == "fast" and few.target_classes == 2
    assert few.deviations and isinstance(few.warnings[0], ReportWarning)
    assert few.warnings[0].name == "autoattack-deviation"
    assert standard.autoattack_acc == standard.robust_acc and standard.robustbench["autoattack_acc"] is not None


def test_a_report_of_harden_0_1_reads() -> None:
    old = EvaluationReport.from_dict(_read(OLD))
    assert old.model.spec == "cifar:wrn-10-1" and old.model.label is None
    assert old.model.name == "cifar:wrn-10-1 + last-stage-width + activation"
    assert old.attacks == ["pgd-5"] and old.n == 16 and len(old.outcome) == 16
    assert old.strength_check == {"examples": 8, "pgd5": 0, "pgd5_2eps": 0}


def test_unknown_keys_survive_a_round_trip() -> None:
    data = _read(CURRENT[0])
    data["from_a_newer_harden"] = {"x": [1, 2]}
    data["model"]["family"] = "wrn"
    data["per_attack"][0]["queries"] = 7
    report = EvaluationReport.from_dict(data)
    assert report.extras == {"from_a_newer_harden": {"x": [1, 2]}}
    assert report.model.extras == {"family": "wrn"} and report.per_attack[0].extras == {"queries": 7}
    assert report.to_dict() == data
    assert report["from_a_newer_harden"] == {"x": [1, 2]}


def test_it_still_reads_as_the_dict_it_was() -> None:
    data = _read(FIXTURES / "reports" / "pgd.json")
    report = EvaluationReport.from_dict(data)
    assert report["robust_acc"] == data["robust_acc"] and report.get("published") is None
    assert [r["attack"] for r in report["per_attack"]] == ["clean", "pgd-2"]
    assert report["examples"]["outcome"] == data["examples"]["outcome"]
    assert "steps" in report and "autoattack_acc" not in report and "deviations" not in report
    assert list(report.keys()) == list(data) and len(report) == len(data) and dict(report) == data
    with pytest.raises(KeyError):
        report["version"]  # None: left out of the JSON
    copied = report["selection"]
    copied["data"] = "changed"  # a copy: the report itself does not change
    assert report.selection["data"] == "sample"


def test_bad_reports_are_refused_naming_the_field() -> None:
    data = _read(CURRENT[0])
    cases = [({**data, "n": "16"}, "report.n: expected int, got str"),
             ({**data, "per_attack": [{"attack": "clean"}]}, "report.per_attack[0].acc is missing"),
             ({k: v for k, v in data.items() if k != "robust_acc"}, "report.robust_acc is missing"),
             ({**data, "format": "harden.evaluate/9"}, "unknown report format 'harden.evaluate/9'"),
             ({"attack": "pgd"}, "is not a harden evaluation report"),
             ([data], "expected a mapping, got list")]
    for bad, message in cases:
        with pytest.raises(ReportError, match=message.replace("[", r"\[").replace("]", r"\]")):
            EvaluationReport.from_dict(bad)
    assert issubclass(ReportError, harden.UsageError)


def test_the_copy_a_model_file_stores_has_no_examples() -> None:
    data = _read(CURRENT[0])
    stored = EvaluationReport.from_dict(data).without_examples()
    assert stored.to_dict() == {k: v for k, v in data.items() if k != "examples"}
    with pytest.raises(ReportError, match="no per-example outcomes"):
        _ = stored.outcome
    keys = ("attack", "norm", "eps", "n", "seed", "clean_acc", "robust_acc")  # what harden inspect showed before
    assert _report_line(stored.to_dict()) == " ".join(f"{k}={data[k]}" for k in keys) + " warnings=1"
    assert _report_line({"attack": "pgd"}) == '{"attack": "pgd"}'  # not a report: its JSON


@pytest.mark.parametrize("path", [*CURRENT, OLD], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_readers_work_on_the_report_and_on_its_json(path: Path, tmp_path: Path) -> None:
    data = _read(path)
    report = EvaluationReport.from_dict(data)
    table = summary_table(report)
    assert table == summary_table(data) and f"robust accuracy: {report.robust_acc:.2f}%" in table
    assert sweep_table(report) == sweep_table(data)
    assert attack_label(report) == attack_label(data)
    assert report_metrics(report) == report_metrics(data) and report_metrics(report)["robust_acc"] == report.robust_acc
    assert report_params(report)["n"] == report.n and report_params(report) == report_params(data)
    assert compare_reports(report, data)["robust"]["difference"] == 0
    if report.eps_sweep:
        assert "2/255" in sweep_table(report)
        assert plot_sweep(report, tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_labels_name_the_attack() -> None:
    labels = {p.stem: attack_label(_read(p)) for p in CURRENT}
    assert labels == {"pgd": "PGD-2", "eps-sweep": "PGD-2", "autoattack-fast-3-classes": "AutoAttack (fast)",
                      "autoattack-standard": "AutoAttack"}


def test_harden_compare_reads_both_fixtures(tmp_path: Path) -> None:
    path = FIXTURES / "reports" / "pgd.json"
    res = CliRunner().invoke(main, ["compare", str(path), str(path)], prog_name="harden")
    assert res.exit_code == 0, res.output
    assert "cifar:wrn-10-1 + activation:name=silu,source=relu" in res.output and "attack PGD-2" in res.output
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**_read(path), "n": None}))
    res = CliRunner().invoke(main, ["compare", str(bad), str(path)], prog_name="harden")
    assert res.exit_code == 2 and "is not an evaluation report: report.n: expected int, got null" in res.output


def test_comparison_rows_read_typed_reports() -> None:
    reports = [EvaluationReport.from_dict(_read(FIXTURES / "reports" / name))
               for name in ("pgd.json", "autoattack-fast-3-classes.json")]
    model = harden.load_model("cifar:wrn-10-1", num_classes=10, input_size=32)
    row = comparison_row("baseline", model, [], reports, None, pretrained=False)
    assert row["robust"] == {"PGD-2": reports[0].robust_acc, "AutoAttack (fast)": reports[1].robust_acc}
    assert row["clean_acc"] == reports[0].clean_acc and row["clean_ci95"] == reports[0].clean_ci95


def test_evaluate_returns_the_report_it_writes_as_before(tmp_path: Path) -> None:
    """The run that wrote autoattack-fast-3-classes.json, again: the same JSON but for timings and host."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3)).eval()
    x = torch.rand(12, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2] * 4)
    path = tmp_path / "r.json"
    report = harden.evaluate(model, (x, y), attack="autoattack", fast=True, n=None, batch_size=12, device="cpu",
                             report=path)
    assert isinstance(report, EvaluationReport)
    written = path.read_text()
    assert written == json.dumps(report.to_dict(), indent=2) + "\n"
    before = _read(FIXTURES / "reports" / "autoattack-fast-3-classes.json")
    assert _key_order(json.loads(written)) == _key_order(before)
    assert _stable(json.loads(written)) == _stable(before)
    assert copy.deepcopy(report) == report
