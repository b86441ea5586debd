"""Experiment tracking: `--track mlflow:URI` and `tracker=` record parameters, metrics and artefacts.

Each test reads the run back from a local MLflow store in its own temporary folder.
"""

from __future__ import annotations

import builtins
import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

import harden
from harden.cli import main
from harden.tracking import MLflowTracker, NullTracker, Tracker, flatten, parse_track

mlflow = pytest.importorskip("mlflow")

SPEC = "tests.tiny_models:tiny_cnn"
TINY = ["--num-classes", "10", "--input-size", "32"]
TRAIN = ["--method", "fgsm-rs", "--epochs", "2", "--train-n", "32", "--val-n", "16", "--val-steps", "1",
         "--batch-size", "16", "--quiet"]


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh local MLflow store; the working folder is tmp_path so artefacts land there too."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run() is not None:
        mlflow.end_run()


def _only_run(uri: str):
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return client, runs[0]


def _artifacts(client, run) -> set[str]:
    return {a.path for a in client.list_artifacts(run.info.run_id)}


def test_parse_track() -> None:
    assert parse_track("mlflow") == ("mlflow", None)
    assert parse_track("mlflow:sqlite:///x.db") == ("mlflow", "sqlite:///x.db")
    with pytest.raises(harden.UsageError):
        parse_track("wandb")
    assert flatten({"a": {"b": 1}, "c": 2}) == {"a.b": 1, "c": 2}
    assert isinstance(NullTracker(), Tracker)


@pytest.mark.slow  # a fresh sqlite store (schema migrations) plus a tiny training or attack
def test_cli_finetune_records_params_epochs_and_files(tmp_path: Path, store: str) -> None:
    out = tmp_path / "m.safetensors"
    result = CliRunner().invoke(main, ["finetune", SPEC, *TINY, "--data", "sample", "-o", str(out), *TRAIN,
                                       "--track", f"mlflow:{store}"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    client, run = _only_run(store)
    assert run.info.status == "FINISHED"
    p = run.data.params
    assert p["method"] == "fgsm-rs" and p["epochs"] == "2" and p["model"] == SPEC and p["data"] == "sample"
    history = client.get_metric_history(run.info.run_id, "val_robust")
    assert [m.step for m in history] == [1, 2]
    entry = harden.provenance_of(harden.load(str(out), trust_code=True)).finetune
    assert [m.value for m in history] == pytest.approx([e["val_robust"] for e in entry.history])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2]
    assert {"m.safetensors", "m.curves.png"} <= _artifacts(client, run)


@pytest.mark.slow  # a fresh sqlite store (schema migrations) plus a tiny training or attack
def test_library_evaluate_logs_into_the_callers_active_run(store: str) -> None:
    from tests.tiny_models import tiny_cnn

    model = harden.wrap(tiny_cnn(), input_size=32)
    with mlflow.start_run(run_name="mine") as mine:
        mlflow.log_params({"batch_size": 128, "seed": 3})  # as a fine-tuning in the same run would
        report = harden.evaluate(model, "sample", attack="pgd", steps=2, n=12, batch_size=12, eps="8/255",
                                 check_examples=0, report="r.json", tracker="mlflow")
        assert mlflow.active_run().info.run_id == mine.info.run_id  # the caller's run stays open
    client, run = _only_run(store)
    assert run.info.run_id == mine.info.run_id
    m, p = run.data.metrics, run.data.params
    assert m["clean_acc"] == pytest.approx(report["clean_acc"])
    assert m["robust_acc"] == pytest.approx(report["robust_acc"])
    assert (m["robust_ci95_low"], m["robust_ci95_high"]) == pytest.approx(tuple(report["robust_ci95"]))
    assert m["acc.clean"] == pytest.approx(report["clean_acc"])
    assert any(k.startswith("acc.pgd") for k in m), m
    assert p["evaluate.attack"] == "pgd" and p["evaluate.n"] == "12" and p["evaluate.batch_size"] == "12"
    assert math.isclose(float(p["evaluate.eps"]), 8 / 255) and p["batch_size"] == "128"
    assert _artifacts(client, run) == {"r.json"}


@pytest.mark.slow  # a fresh sqlite store (schema migrations) plus a tiny training or attack
def test_library_finetune_takes_a_tracker_object(tmp_path: Path, store: str) -> None:
    from tests.tiny_models import tiny_cnn

    sink = MLflowTracker(store, run_name="lib")
    harden.finetune(harden.wrap(tiny_cnn(), input_size=32), "sample", output=tmp_path / "lib.safetensors",
                    method="fgsm-rs", epochs=1, train_n=32, val_n=16, val_steps=1, batch_size=16, progress=False,
                    tracker=sink)
    sink.close()
    client, run = _only_run(store)
    assert run.info.run_name == "lib" and run.data.params["batch_size"] == "16"
    assert "val_clean" in run.data.metrics and "lib.safetensors" in _artifacts(client, run)


def test_track_without_mlflow_is_one_line_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_mlflow(name, *args, **kwargs):
        if name == "mlflow" or name.startswith("mlflow."):
            raise ImportError("No module named 'mlflow'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    for command in (["finetune", SPEC, *TINY, "--data", "sample", "-o", str(tmp_path / "x.safetensors")],
                    ["evaluate", SPEC, *TINY, "--data", "sample"]):
        result = CliRunner().invoke(main, [*command, "--track", "mlflow"])
        assert result.exit_code == 2
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "pip install 'harden[mlflow]'" in lines[0]
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.slow  # two tiny fine-tunings and three tiny evaluations
def test_run_with_tracking_key_records_every_stage(tmp_path: Path, store: str) -> None:
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(f"""\
name: tiny
model: {{spec: {SPEC}, num_classes: 10, input_size: 32}}
data: {{train: sample}}
transforms: [activation:name=silu]
finetune: {{method: fgsm-rs, epochs: 1, train_n: 32, batch_size: 16, val_n: 16, val_steps: 1}}
evaluate: {{attacks: [pgd], steps: 1, n: 12, batch_size: 12}}
tracking: mlflow:{store}
""")
    result = CliRunner().invoke(main, ["run", str(recipe), "--out", str(tmp_path / "run"), "--quiet"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    client, run = _only_run(store)
    p, m = run.data.params, run.data.metrics
    assert p["finetune.method"] == "fgsm-rs" and p["baseline.method"] == "fgsm-rs" and p["hardened.epochs"] == "1"
    assert p["baseline.data"] == "sample" and p["start.pgd.evaluate.attack"] == "pgd"
    table = {r["model"]: r for r in json.loads((tmp_path / "run" / "comparison.json").read_text())["rows"]}
    for label in ("start", "baseline", "hardened"):
        assert m[f"{label}.pgd.robust_acc"] == pytest.approx(table[label]["robust"][next(iter(table[label]["robust"]))])
    assert [h.step for h in client.get_metric_history(run.info.run_id, "hardened.val_robust")] == [1]
    assert {"comparison.md", "comparison.json", "recipe.yaml", "baseline.safetensors", "hardened.safetensors",
            "hardened.eval-pgd.json", "hardened.curves.png"} <= _artifacts(client, run)


def test_only_rank_0_records(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from harden.tracking import open_tracker

    mine = NullTracker()
    assert open_tracker(mine) is mine
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'never.db'}")
    assert isinstance(open_tracker("mlflow"), NullTracker) and open_tracker(mine) is not mine
    assert not (tmp_path / "never.db").exists()


def test_a_corruption_report_is_tracked_under_its_threats_name() -> None:
    from harden.tracking import corruption_metrics

    report = {"kind": "corruptions", "mean_corruption_acc": 41.5, "clean_acc": 60.0,
              "per_type": [{"corruption": "fog", "acc": 30.0}, {"corruption": "gaussian_noise", "acc": 53.0}]}
    assert corruption_metrics(report) == {"corruptions.mean_acc": 41.5, "corruptions.clean_acc": 60.0,
                                          "corruptions.fog": 30.0, "corruptions.gaussian_noise": 53.0}
