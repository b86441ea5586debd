"""The library's entry points: :func:`check_settings`, which checks an evaluation's settings before
anything loads, and :func:`evaluate`, which checks them, loads the model, starts the session (device,
``torchrun`` ranks, tracker) and the event sinks, and hands the loaded model to
:func:`harden.evaluation.measure.evaluate_loaded`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harden import tracking
from harden.bpda import straight_through_modules
from harden.data import ImageDataset
from harden.errors import UsageError
from harden.evaluation.attack_plan import AttackPlan, plan_attack
from harden.evaluation.eps import parse_eps, parse_eps_list
from harden.evaluation.measure import Clock, evaluate_loaded, report_path
from harden.evaluation.progress import progress_store
from harden.evaluation.report_types import EvaluationReport
from harden.runtime import events as ev
from harden.runtime.modes import eval_mode
from harden.runtime.session import session
from harden.schemas.evaluate import EvaluateConfig, make_evaluate_config
from harden.serialization import load
from harden.sources import load_model


def check_settings(cfg: EvaluateConfig) -> tuple[AttackPlan, list[tuple[float, str]] | None]:
    """Check an evaluation's attack, eps and files before anything loads: its plan and eps sweep (or None)."""
    step = cfg.step_size
    if isinstance(step, str):  # command line text
        step = parse_eps(step, norm="L2")[0] if step.strip() else None
    plan = plan_attack(cfg.attack, eps=cfg.eps, norm=cfg.norm, fast=cfg.fast, seed=cfg.seed, steps=cfg.steps,
                       step_size=step, version=cfg.version)
    sweep = parse_eps_list(cfg.eps_sweep, norm=cfg.norm) if cfg.eps_sweep is not None else None
    if cfg.resume and sweep is not None:
        raise UsageError("--resume does not apply to --eps-sweep; run the sweep again")
    if cfg.report is not None and Path(cfg.report).is_dir():
        raise UsageError(f"--report '{cfg.report}' is a directory; give a file name such as report.json")
    if cfg.into is not None:
        from harden.serialization import read_provenance

        read_provenance(cfg.into)  # fails early (one line) when it is not a harden model file
    return plan, sweep


def _resolve_model(model: nn.Module | str, trust_code: bool) -> nn.Module:
    if isinstance(model, nn.Module):
        return model
    if str(model).endswith((".safetensors", ".pt", ".pth")) or Path(model).is_file():
        if str(model).endswith((".pt", ".pth")):
            raise UsageError(f"'{model}' is a torch checkpoint; build the model with harden.load_model(spec, "
                             "weights=...) and pass it")
        return load(model, trust_code=trust_code)
    return load_model(model)


def _events(cfg: EvaluateConfig, main: bool, *, progress: bool, on_batch: Callable[[dict[str, Any]], None] | None,
            tracked: Any) -> ev.Events:
    """Where the run's progress, batches and report go: the terminal, the caller, the report file, the tracker."""
    path = report_path(cfg)
    return ev.Events(ev.Terminal() if progress and main else None, ev.Callbacks(on_batch=on_batch),
                     ev.ReportFile(path) if path is not None and main else None, tracking.TrackerSink(tracked))


def _with_bpda(model: nn.Module, data: Any, cfg: EvaluateConfig, plan: AttackPlan, as_is: EvaluationReport, *,
               device: torch.device, main: bool, progress: bool) -> EvaluationReport:
    """The same attack again with straight-through gradients, on the same images; the lower per image counts
    (:mod:`harden.evaluation.straight_through`). The second run keeps no progress file and is not resumed."""
    from harden.bpda import straight_through
    from harden.evaluation.straight_through import combine

    again = dataclasses.replace(cfg, report=None, resume=False, into=None, eps_sweep=None)
    events = ev.Events(ev.Terminal() if progress and main else None)  # progress only: the report is the combined one
    with straight_through(model) as count:
        through = evaluate_loaded(model, data, again, plan=plan, sweep=None, device=device, events=events,
                                  check_examples=0, clock=Clock.start())
    return combine(as_is, through, count)


def _finish(result: EvaluationReport, cfg: EvaluateConfig, main: bool, events: ev.Events) -> None:
    """Hand the report to the sinks; drop the progress file and store the report in ``--into`` (rank 0)."""
    path = report_path(cfg)
    events.emit(ev.Record("report", result.to_dict()))
    if main and path is not None:
        progress_store(path).remove()
    if main and cfg.into is not None:
        from harden.serialization import add_report

        add_report(cfg.into, result.without_examples().to_dict())
    events.emit(ev.ArtifactWritten(path))


def evaluate(model: nn.Module | str, data: str | ImageDataset | tuple[torch.Tensor, torch.Tensor] = "sample",
             config: EvaluateConfig | None = None, *, progress: bool = False, check_examples: int | None = None,
             trust_code: bool = False, on_batch: Callable[[dict[str, Any]], None] | None = None,
             tracker: Any = None, **settings: Any) -> EvaluationReport:
    """Evaluate the robustness of ``model`` (images in [0, 1] -> logits) and return its report.

    What is measured is an :class:`~harden.schemas.evaluate.EvaluateConfig`: ``config``, or harden's
    defaults, with keyword ``settings`` (its fields: ``attack``, ``eps``, ``norm``, ``n``, ``seed``,
    ``fast``, ``report``, ...) in their place, e.g. ``evaluate(model, "sample", attack="pgd", n=500)``.
    ``data`` is a data spec, an :class:`~harden.data.ImageDataset` or ``(x, y)`` tensors; the first
    ``n`` examples (or a seeded random subset) are used. ``attack`` is ``autoattack`` (``fast`` for
    APGD-CE + APGD-T), ``apgd-ce``, ``pgd``, ``fgsm`` or ``cw``. ``report`` writes the JSON report
    (and keeps per-batch progress beside it, as ``REPORT.progress``, for ``resume``); ``into`` adds
    the report to a harden model file. Under ``torchrun`` the batches are shared among the ranks.
    ``check_examples`` is the size of the subset harden's gradient and strength checks use (default
    n/20, between 8 and 32; 0 turns them off). ``skip_bad_images`` leaves out images that cannot be
    decoded (the report's ``selection`` counts and names them) instead of stopping at the first one.
    ``tracker`` (``"mlflow"``, ``"mlflow:URI"`` or a :class:`harden.tracking.Tracker`) records what was
    measured, the figures (accuracy after each attack, 95% intervals) and the report file.
    ``threat="corruptions"`` measures accuracy under the 15 common corruptions instead (``corruptions``
    picks types; ``data`` may be an ``npyc:DIR`` folder of CIFAR-10-C ``.npy`` files): see
    :mod:`harden.evaluation.corruption_eval`.

    The report is an :class:`~harden.evaluation.report_types.EvaluationReport` (``report.robust_acc``,
    ``report.per_attack``; ``report.to_dict()`` is the JSON ``report`` writes). Code written for the dict
    earlier versions returned keeps working: it reads as a read-only mapping (``report["robust_acc"]``).
    """
    clock = Clock.start()
    cfg = make_evaluate_config(config, **settings)
    if cfg.threat == "corruptions":
        return _evaluate_corruptions(model, data, cfg, progress=progress, trust_code=trust_code, tracker=tracker,
                                     clock=clock)
    plan, sweep = check_settings(cfg)
    path = report_path(cfg)
    with tracking.Session(tracker, run_name=path.stem if path else None) as tracked, session(cfg.device) as dist:
        model = _resolve_model(model, trust_code).to(dist.device)
        events = _events(cfg, dist.is_main, progress=progress, on_batch=on_batch, tracked=tracked)
        with eval_mode(model):
            result = evaluate_loaded(model, data, cfg, plan=plan, sweep=sweep, device=dist.device, events=events,
                                     check_examples=check_examples, clock=clock)
            if cfg.bpda is not False and straight_through_modules(model):
                result = _with_bpda(model, data, cfg, plan, result, device=dist.device, main=dist.is_main,
                                    progress=progress)
        _finish(result, cfg, dist.is_main, events)
        dist.barrier()
    return result


def _evaluate_corruptions(model: nn.Module | str, data: Any, cfg: EvaluateConfig, *, progress: bool, trust_code: bool,
                          tracker: Any, clock: Clock) -> dict[str, Any]:
    """``threat="corruptions"``: checked before anything loads, measured, and its report written (rank 0)."""
    from harden.evaluation.corruption_eval import check_corruption_settings, evaluate_corruptions

    check_corruption_settings(cfg, data)
    path = report_path(cfg)
    with tracking.Session(tracker, run_name=path.stem if path else None) as tracked, session(cfg.device) as dist:
        model = _resolve_model(model, trust_code).to(dist.device)
        events = _events(cfg, dist.is_main, progress=progress, on_batch=None, tracked=tracked)
        with eval_mode(model):
            result = evaluate_corruptions(model, data, cfg, events=events, started=clock.at)
        events.emit(ev.Record("report", result))
        events.emit(ev.ArtifactWritten(path))
        dist.barrier()
    return result
