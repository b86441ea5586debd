"""Experiment tracking: a small sink interface, an MLflow sink and a no-op one.

Commands and library calls emit events (:mod:`harden.runtime.events`); a :class:`TrackerSink` turns
them into a :class:`Tracker`'s parameters, metrics by step and artefact files, so no command calls a
tracking library itself. ``open_tracker("mlflow[:URI]")`` makes the
sink the ``--track`` option names. Only the first process of a torchrun job records anything.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from harden.errors import UsageError
from harden.runtime import events

if TYPE_CHECKING:
    from harden.evaluation.report_types import EvaluationReport

INSTALL_HINT = "pip install 'harden[mlflow]'"
SINKS = ("mlflow",)


@runtime_checkable
class Tracker(Protocol):
    """Where a run's parameters, metrics and artefacts go."""

    def params(self, values: Mapping[str, Any]) -> None: ...

    def metrics(self, values: Mapping[str, float], step: int | None = None) -> None: ...

    def artifact(self, path: str | os.PathLike[str]) -> None: ...

    def close(self, failed: bool = False) -> None: ...


class NullTracker:
    """Records nothing (no ``--track``, or a process other than torchrun's rank 0)."""

    def params(self, values: Mapping[str, Any]) -> None:
        pass

    def metrics(self, values: Mapping[str, float], step: int | None = None) -> None:
        pass

    def artifact(self, path: str | os.PathLike[str]) -> None:
        pass

    def close(self, failed: bool = False) -> None:
        pass


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError:
        raise UsageError(f"--track mlflow needs the mlflow package: {INSTALL_HINT}") from None
    return mlflow


class MLflowTracker:
    """Logs to an MLflow run: the caller's active run if there is one (left open), else a new one.

    ``uri`` is a tracking URI (a folder, ``sqlite:///mlflow.db``, ``http://host:5000``); without one,
    MLflow's own default applies (``MLFLOW_TRACKING_URI``, else its local store).
    """

    def __init__(self, uri: str | None = None, *, run_name: str | None = None) -> None:
        self._mlflow = mlflow = _mlflow()
        active = mlflow.active_run()
        if uri and active is None:
            mlflow.set_tracking_uri(uri)
        self._owned = active is None
        self.run = active if active is not None else mlflow.start_run(run_name=run_name)
        self._client = mlflow.MlflowClient()
        self.run_id: str = self.run.info.run_id

    def params(self, values: Mapping[str, Any]) -> None:
        for key, value in flatten(values).items():
            self._client.log_param(self.run_id, key, "None" if value is None else str(value)[:6000])

    def metrics(self, values: Mapping[str, float], step: int | None = None) -> None:
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self._client.log_metric(self.run_id, key, float(value), step=step or 0)

    def artifact(self, path: str | os.PathLike[str]) -> None:
        if Path(path).is_file():
            self._client.log_artifact(self.run_id, str(path))

    def close(self, failed: bool = False) -> None:
        if self._owned:
            self._mlflow.end_run(status="FAILED" if failed else "FINISHED")
            self._owned = False


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (MLflow parameters are flat)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def parse_track(spec: str) -> tuple[str, str | None]:
    """``"mlflow"`` or ``"mlflow:URI"`` -> (sink, URI or None)."""
    sink, sep, uri = spec.partition(":")
    if sink not in SINKS:
        raise UsageError(f"--track takes mlflow or mlflow:URI, got '{spec}'")
    if sep and not uri:
        raise UsageError("--track mlflow: needs a URI after the colon (or plain --track mlflow)")
    return sink, uri or None


def check_track(spec: str | None) -> None:
    """Fail early (one line, exit 2) on a malformed ``--track`` or a missing package."""
    if spec is not None:
        parse_track(spec)
        _mlflow()


def open_tracker(spec: str | Tracker | None, *, run_name: str | None = None) -> Tracker:
    """The sink ``spec`` names (``None``: none). Processes other than torchrun's rank 0 get a no-op."""
    if spec is None:
        return NullTracker()
    if isinstance(spec, str):
        check_track(spec)  # a malformed spec or a missing package is a usage error on every rank
    if int(os.environ.get("RANK", "0") or 0) != 0:
        return NullTracker()
    return MLflowTracker(parse_track(spec)[1], run_name=run_name) if isinstance(spec, str) else spec


def epoch_metrics(entry: Mapping[str, Any]) -> dict[str, float]:
    """A fine-tuning epoch's numbers as metrics (validation accuracies, loss, lr, eps, seconds)."""
    return {k: v for k, v in entry.items() if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)}


def report_metrics(report: EvaluationReport | Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """An evaluation report's figures: clean and robust accuracy with 95% intervals, accuracy after each attack."""
    r = _as_report(report)
    out: dict[str, float] = {}
    for key, value in (("clean_acc", r.clean_acc), ("robust_acc", r.robust_acc), ("autoattack_acc", r.autoattack_acc)):
        if value is not None:
            out[prefix + key] = float(value)
    for key, ci in (("clean_ci95", r.clean_ci95), ("robust_ci95", r.robust_ci95)):
        if ci:
            out[f"{prefix}{key}_low"], out[f"{prefix}{key}_high"] = map(float, ci)
    for row in r.per_attack:
        out[f"{prefix}acc.{row.attack}"] = float(row.acc)
    return out


def report_params(report: EvaluationReport | Mapping[str, Any]) -> dict[str, Any]:
    """What an evaluation measured: attack, threat, n, seed, batch size, data."""
    r = _as_report(report)
    values = {"attack": r.attack, "attacks": r.attacks, "norm": r.norm, "eps": r.eps, "eps_text": r.eps_text,
              "n": r.n, "seed": r.seed, "batch_size": r.batch_size, "version": r.version or None}
    out = {k: v for k, v in values.items() if v is not None}
    out.update({f"selection.{k}": v for k, v in r.selection.items() if isinstance(v, (str, int, float, bool))})
    return out


def corruption_metrics(report: Mapping[str, Any]) -> dict[str, float]:
    """A corruption report's figures under the threat's own name: ``corruptions.clean_acc``,
    ``corruptions.mean_acc`` and ``corruptions.TYPE`` (accuracy over its five severities), in percent."""
    out = {"corruptions.mean_acc": report["mean_corruption_acc"]}
    if report.get("clean_acc") is not None:
        out["corruptions.clean_acc"] = report["clean_acc"]
    for row in report.get("per_type") or []:
        out[f"corruptions.{row['corruption']}"] = row["acc"]
    return out


def _as_report(report: EvaluationReport | Mapping[str, Any]) -> EvaluationReport:
    from harden.evaluation.report_types import EvaluationReport  # harden.evaluation imports this module

    return EvaluationReport.of(report)


class Prefixed:
    """Another tracker's run, with every parameter and metric name prefixed (one stage of ``harden run``)."""

    def __init__(self, inner: Tracker, prefix: str) -> None:
        self.inner, self.prefix = inner, prefix

    def params(self, values: Mapping[str, Any]) -> None:
        self.inner.params({self.prefix + k: v for k, v in flatten(values).items()})

    def metrics(self, values: Mapping[str, float], step: int | None = None) -> None:
        self.inner.metrics({self.prefix + k: v for k, v in values.items()}, step=step)

    def artifact(self, path: str | os.PathLike[str]) -> None:
        self.inner.artifact(path)

    def close(self, failed: bool = False) -> None:
        pass  # the stage ends; the run goes on


class Session:
    """A library call's tracker: opened from a ``--track`` string (and closed by the call) or the caller's own."""

    def __init__(self, spec: str | Tracker | None, *, run_name: str | None = None) -> None:
        self.tracker = open_tracker(spec, run_name=run_name)
        self._owned = isinstance(spec, str)

    def __enter__(self) -> Tracker:
        return self.tracker

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._owned:
            self.tracker.close(failed=exc_type is not None)


class TrackerSink:
    """A tracker as one sink of a run's events: settings become parameters, each epoch's numbers metrics at
    step = epoch, an evaluation report its figures (under ``evaluate.`` for its parameters, apart from a
    fine-tuning's), and the files written artefacts."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker

    def handle(self, event: events.Event) -> None:
        t = self.tracker
        if isinstance(event, events.ArtifactWritten):
            if event.path is not None and Path(event.path).is_file():
                t.artifact(event.path)
        elif isinstance(event, events.Record):
            values = event.values
            if event.kind == "settings":
                t.params(values)
            elif event.kind == "epoch":
                t.metrics(epoch_metrics(values), step=int(values["epoch"]))
            elif event.kind == "figures":
                t.metrics(values, step=event.step)
            elif event.kind == "report" and values.get("kind") == "corruptions":
                t.params({"corruptions": {"model": values["model"].get("spec"), "n": values["n"],
                                          "seed": values["seed"], "types": values["corruptions"]}})
                t.metrics(corruption_metrics(values))
            elif event.kind == "report":
                report = _as_report(values)
                t.params({"evaluate": {"model": report.model.spec, **report_params(report)}})
                t.metrics(report_metrics(report))
