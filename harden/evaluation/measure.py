"""One evaluation of a loaded model, from choosing the examples to the report: the progress it
starts from (fresh, or read back for ``--resume``), the checks and attacks, the eps sweep, and the
warnings of every rank merged."""

from __future__ import annotations

import datetime as _dt
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from harden.attacks import check_logits
from harden.evaluation import honesty_checks as chk
from harden.evaluation.attack_plan import AttackPlan, plan_for_classes
from harden.evaluation.attack_stages import run_stages
from harden.evaluation.batch_size import pick_batch_size
from harden.evaluation.checking import after_attacks, preflight
from harden.evaluation.examples import Examples, select_examples
from harden.evaluation.progress import Progress, progress_store
from harden.evaluation.report import Measured, build_report
from harden.evaluation.report_types import EvaluationReport
from harden.evaluation.sweep import run_sweep
from harden.model import warn_if_random
from harden.runtime import distributed as hd
from harden.runtime import events as ev
from harden.runtime.store import state_digest
from harden.schemas.evaluate import EvaluateConfig


@dataclass(frozen=True)
class Clock:
    """When an evaluation started: ``perf_counter()`` for its duration, the UTC time for its report."""

    t0: float
    at: _dt.datetime

    @classmethod
    def start(cls) -> Clock:
        t0 = time.perf_counter()
        return cls(t0, _dt.datetime.now(_dt.timezone.utc))


def report_path(cfg: EvaluateConfig) -> Path | None:
    """Where the report goes (``--report``), if anywhere."""
    return Path(cfg.report) if cfg.report is not None else None


def _fingerprint(model: nn.Module, examples: Examples, plan: AttackPlan) -> dict[str, Any]:
    """What a progress file must match to be resumed."""
    return {
        "attack": plan.attack, "attacks": list(plan.stages), "eps": plan.eps, "norm": plan.norm,
        "seed": plan.seed, "steps": plan.steps, "step_size": plan.step_size, "n": examples.n,
        "examples": examples.digest(), "model": state_digest(model, short=True),
    }


def _probe(model: nn.Module, data: Any, device: torch.device) -> torch.Tensor | None:
    """An input to count the model's logits on before the data is read: its first tensor image, or zeros of
    a harden model's input size (None when neither is at hand)."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return data[0][:1].float().to(device) if data[0].dim() == 4 and len(data[0]) else None
    size = getattr(model, "input_size", None)
    return torch.zeros(1, *size, device=device) if isinstance(size, tuple) and len(size) == 3 else None


def _plan_for(model: nn.Module, x: torch.Tensor, plan: AttackPlan) -> AttackPlan:
    """``plan`` for the number of logits ``model`` returns on ``x`` (a one-output model is refused)."""
    with torch.no_grad():
        return plan_for_classes(plan, check_logits(model(x)))


def _select(model: nn.Module, data: Any, cfg: EvaluateConfig, plan: AttackPlan,
            device: torch.device) -> tuple[Examples, dict[str, Any], AttackPlan]:
    """The examples, their description, and the plan for the model's number of classes."""
    probe = _probe(model, data, device)
    if probe is not None:  # before the data's own checks, so a one-output model hears how to wrap it
        plan = _plan_for(model, probe, plan)
    examples, selection = select_examples(data, model, cfg)
    if probe is None:
        plan = _plan_for(model, examples.get(torch.arange(1))[0].to(device), plan)
    warn_if_random(model, "evaluating")  # once the data fit: a failing command says only what failed
    return examples, selection, plan


def _auto_batch_size(model: nn.Module, examples: Examples, device: torch.device) -> int:
    """``--batch-size auto``: what fits on every rank (the smallest of the ranks' choices)."""
    per_rank = math.ceil(examples.n / hd.world_size())
    shape = tuple(examples.get(torch.arange(1))[0].shape[1:])
    batch_size = pick_batch_size(model, shape, device, per_rank)
    return int(-hd.all_reduce_max(torch.tensor([-batch_size])).item())


def _start_progress(model: nn.Module, examples: Examples, plan: AttackPlan, cfg: EvaluateConfig,
                    device: torch.device, log: chk.WarningLog) -> Progress:
    """The progress a run starts from: read back for ``--resume`` (with its warnings), else fresh."""
    path = report_path(cfg)
    store = progress_store(path) if path is not None else None
    fingerprint = _fingerprint(model, examples, plan) if store is not None else {}
    batch_size = cast("int | None", None if cfg.batch_size == "auto" else cfg.batch_size)
    if cfg.resume and store is not None:
        prog = Progress.load(store, fingerprint, batch_size)
        if prog is not None:
            log.merge_max(prog.warnings or [])
            return prog
    if batch_size is None:
        batch_size = _auto_batch_size(model, examples, device)
    return Progress.fresh(store, fingerprint, batch_size, examples.n)


def _attack(model: nn.Module, examples: Examples, plan: AttackPlan, prog: Progress, *, device: torch.device,
            log: chk.WarningLog, events: ev.Events, check_examples: int) -> float:
    """The checks before the attacks (on rank 0), then the stages; the seconds the attacks took in all."""
    events.emit(ev.ProgressStarted(examples.n * (1 + len(plan.stages)), unit="ex"))
    t_run = time.perf_counter()
    try:
        pre = chk.WarningLog()  # merged without double counting what a resumed run saw before
        with chk.capture_autoattack(pre):
            if hd.is_main():
                preflight(model, examples, plan, batch_size=prog.batch_size, device=device, log=pre,
                          check_examples=check_examples)
        log.merge_max(pre.as_dicts())
        with chk.capture_autoattack(log):
            run_stages(model, examples, plan, prog, device=device, log=log, events=events, start_time=t_run)
    finally:
        events.emit(ev.ProgressEnded())
    return prog.elapsed + time.perf_counter() - t_run


def evaluate_loaded(model: nn.Module, data: Any, cfg: EvaluateConfig, *, plan: AttackPlan,
                    sweep: list[tuple[float, str]] | None, device: torch.device, events: ev.Events,
                    check_examples: int | None, clock: Clock) -> EvaluationReport:
    """Evaluate ``model`` (loaded, on ``device``, in eval mode) as ``cfg`` and ``plan`` say; the report."""
    buffers = chk.snapshot_buffers(model)
    examples, selection, plan = _select(model, data, cfg, plan, device)
    if check_examples is None:  # a small subset: the checks cost about 1% of a real evaluation
        check_examples = min(32, max(8, examples.n // 20))
    log = chk.WarningLog()
    if plan.deviations:  # one line on the terminal; the report lists them under "deviations"
        log.add("autoattack-deviation", "; ".join(plan.deviations))
    prog = _start_progress(model, examples, plan, cfg, device, log)
    run_seconds = _attack(model, examples, plan, prog, device=device, log=log, events=events,
                          check_examples=check_examples)
    strength = after_attacks(model, examples, plan, prog, device=device, log=log, check_examples=check_examples)
    sweep_rows = None
    if sweep is not None:
        sweep_rows = run_sweep(model, examples, plan, sweep, prog.status, prog.batch_size, device, log)
    if hd.is_main():
        log.extend(chk.check_buffers_unchanged(model, buffers))
    # every rank saw its own batches: the same warning from several ranks adds up its counts
    gathered = hd.all_gather_objects(log.as_dicts())
    merged = chk.WarningLog([w for part in gathered for w in part])
    total = time.perf_counter() - clock.t0 + (prog.elapsed if prog.resumed else 0.0)
    measured = Measured(examples, selection, prog, merged, run_seconds=run_seconds, total_seconds=total,
                        strength=strength, sweep_rows=sweep_rows)
    return build_report(model, plan, measured, device=device, started=clock.at)
