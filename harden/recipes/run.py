"""``harden run``: a recipe's stages as one pipeline, recorded by a tracker.

:func:`run_recipe` loads the start model and the data, checks every transform applies, then
pre-trains (if asked), fine-tunes and evaluates the baseline and each hardened variant from the same
start, and writes the comparison. The stages are in :mod:`harden.recipes.steps`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harden import tracking
from harden.evaluation.report_types import EvaluationReport
from harden.model import HardenedModel
from harden.recipes.compare import comparison_result, comparison_row, write_comparison
from harden.recipes.run_plan import plan_run
from harden.recipes.schema import Recipe
from harden.recipes.state import RunState
from harden.recipes.steps import (
    RunContext,
    apply_stage,
    check_transforms_apply,
    evaluate_stage,
    finetune_stage,
    load_data,
    load_start_model,
    pretrain_stage,
    write_resolved_recipe,
)
from harden.runtime.events import ArtifactWritten, Events, Record
from harden.runtime.session import session


def run_recipe(recipe: Recipe, *, out_dir: str | os.PathLike[str] | None = None, progress: bool = True,
               echo: Callable[[str], Any] | None = None, resume: bool = False, tracker: Any = None) -> dict[str, Any]:
    """apply -> finetune -> evaluate for the baseline and the hardened model(s); write models, reports, table.

    Returns the comparison (``rows``, ``notes``, ``markdown``, ``out_dir``). Under torchrun every rank
    trains and evaluates its share; only rank 0 writes. ``resume=True`` continues an interrupted run
    in the same ``out_dir``: finished stages are read back, an interrupted fine-tuning continues from
    its checkpoint and an interrupted evaluation from its saved batches. ``tracker`` (default: the
    recipe's ``tracking`` key) records one tracking run: the recipe as parameters, each stage's metrics
    under its name (``baseline.val_robust``, ``hardened.pgd.robust_acc``, ...) and the output files.
    """
    spec = tracker if tracker is not None else recipe.values.get("tracking")
    tracking.check_track(spec if isinstance(spec, str) else None)
    with tracking.Session(spec, run_name=recipe.name) as sink:
        events = Events(tracking.TrackerSink(sink))
        events.emit(Record("settings", recipe.values))
        result = _run_recipe(recipe, out_dir=out_dir, progress=progress, echo=echo, resume=resume, sink=sink)
        out = Path(result["out_dir"])
        for name in ("comparison.md", "comparison.json", "recipe.yaml"):
            events.emit(ArtifactWritten(out / name))
    return result



def _run_recipe(recipe: Recipe, *, out_dir: str | os.PathLike[str] | None, progress: bool,
                echo: Callable[[str], Any] | None, resume: bool, sink: Any) -> dict[str, Any]:
    """:func:`run_recipe`'s stages, reporting to the tracker ``sink``."""
    plan = plan_run(recipe, out_dir)
    with session("auto") as dist:
        t_run = time.perf_counter()
        base = load_start_model(recipe, plan)
        train_ds, test_ds = load_data(plan, base)
        check_transforms_apply(recipe, plan, base)  # every transform must apply before any training starts
        state = RunState(plan.out, plan.values, resume=resume, writer=dist.is_main)
        if dist.is_main:
            write_resolved_recipe(recipe, plan)
        ctx = RunContext(plan=plan, state=state, train_ds=train_ds, test_ds=test_ds, sink=sink,
                         say=echo or (lambda _s: None), progress=progress, resume=resume, main=dist.is_main)
        rows, evaluations = _run_models(ctx, base)
        result = comparison_result(recipe, plan, test_ds.spec, rows, evaluations, time.perf_counter() - t_run)
        if dist.is_main:
            write_comparison(plan.out, result)
        dist.barrier()
        return result


def _run_models(ctx: RunContext, base: HardenedModel) -> tuple[list[dict[str, Any]], dict[str, list[EvaluationReport]]]:
    """The table's rows (the start model, then each variant) and each variant's reports (for the paired tests)."""
    pretrained = ctx.plan.pretrain is not None
    rows = []
    evaluations: dict[str, list[EvaluationReport]] = {}
    start, pre_seconds = pretrain_stage(ctx, base)
    if ctx.plan.evaluate_start:
        reports = evaluate_stage(ctx, start, "start", ctx.out / "start.safetensors" if pretrained else None)
        rows.append(comparison_row("start", start, [], reports, pre_seconds, pretrained=pretrained))
    for name, transforms in ctx.plan.variants:
        model = apply_stage(ctx, start, transforms)
        ctx.say(f"[{name}] fine-tuning" + (f" with {', '.join(transforms)}" if transforms else " (no transform)"))
        tuned, seconds = finetune_stage(ctx, model, name, ctx.plan.finetune)
        reports = evaluate_stage(ctx, tuned, name, ctx.out / f"{name}.safetensors")
        rows.append(comparison_row(name, tuned, transforms, reports, seconds, pretrained=pretrained))
        evaluations[name] = reports
    return rows, evaluations
