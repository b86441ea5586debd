"""The stages of ``harden run``, each a function of an explicit :class:`RunContext`.

Before any training: load the start model (:func:`load_start_model`), the data (:func:`load_data`)
and check that every variant's transforms apply (:func:`check_transforms_apply`). Then per model:
the optional clean pre-training (:func:`pretrain_stage`), applying the transforms (:func:`apply_stage`),
adversarial fine-tuning (:func:`finetune_stage`) and evaluation (:func:`evaluate_stage`). A finished
stage is recorded in the run's :class:`~harden.recipes.state.RunState` and read back on ``--resume``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harden import evaluation, training  # called through the modules: tests and callers may replace them
from harden.attacks import takes_steps
from harden.data import ImageDataset, load_dataset
from harden.data.images import held_warnings
from harden.errors import HardenError, UsageError
from harden.evaluation.report_types import EvaluationReport
from harden.model import HardenedModel
from harden.pipeline import apply
from harden.recipes.run_plan import RunPlan
from harden.recipes.schema import Recipe
from harden.recipes.state import RunState
from harden.runtime.atomic import atomic_path
from harden.runtime.store import checkpoint_path_for
from harden.schemas.finetune import FinetuneConfig
from harden.serialization import load
from harden.tracking import Prefixed
from harden.training import resolve_data


@dataclass(frozen=True)
class RunContext:
    """What the stages of one run share: its plan and state, the data, and where progress and metrics go."""

    plan: RunPlan
    state: RunState
    train_ds: ImageDataset
    test_ds: ImageDataset
    sink: Any  # the tracker every stage reports its metrics to, under the stage's name
    say: Callable[[str], Any]
    progress: bool
    resume: bool
    main: bool  # this process writes the run's files (rank 0 under torchrun)

    @property
    def out(self) -> Path:
        """The run's output folder."""
        return self.plan.out


def load_start_model(recipe: Recipe, plan: RunPlan) -> HardenedModel:
    """The recipe's model, initialised from its seed without touching the caller's random generator."""
    return plan.model.build()


def load_data(plan: RunPlan, base: HardenedModel) -> tuple[ImageDataset, ImageDataset]:
    """The fine-tuning (train split) and evaluation (test split) data, brought to the model's input."""
    data = plan.data
    read = {"download": bool(data.get("download")), "image_size": base.input_size, "resize": data.get("resize"),
            "crop": data.get("crop", "center")}
    with held_warnings():  # warned only when both fit the model
        train_ds = resolve_data(load_dataset(data["train"], data.get("train_split", "train"), **read), base, False)
        test_ds = load_dataset(data.get("test", data["train"]), data.get("test_split", "test"), **read)
        if test_ds.num_classes != base.num_classes:
            raise UsageError(f"the test data '{test_ds.spec}' has {test_ds.num_classes} classes but the model has "
                             f"{base.num_classes} outputs")
    return train_ds, test_ds


def check_transforms_apply(recipe: Recipe, plan: RunPlan, base: HardenedModel) -> None:
    """Apply every variant's transforms once, so that a transform that does not fit fails before any training."""
    for name, transforms in plan.variants:
        if transforms:
            try:
                apply(base, transforms)
            except HardenError as exc:
                key = "transforms" if name == "hardened" else f"variants.{name}"
                raise type(exc)(f"{recipe.location(key)}: {exc}") from None


def write_resolved_recipe(recipe: Recipe, plan: RunPlan) -> None:
    """Write ``recipe.yaml`` into the output folder: the recipe with its ``--set`` values, as run."""
    with atomic_path(plan.out / "recipe.yaml") as tmp:
        tmp.write_text(f"# resolved from {recipe.path}\n" + yaml.safe_dump(plan.values, sort_keys=False))


def finetune_stage(ctx: RunContext, model: HardenedModel, label: str,
                   settings: FinetuneConfig) -> tuple[HardenedModel, float]:
    """Fine-tune ``model`` into ``OUT/<label>.safetensors``; the tuned model and its seconds.

    A stage finished earlier is read back; an interrupted one continues from its checkpoint on resume.
    """
    stage, path = f"finetune:{label}", ctx.out / f"{label}.safetensors"
    done = ctx.state.finished(stage)
    if done is not None:
        ctx.say(f"[{label}] fine-tuning finished earlier, read from {path.name}")
        return load(path, trust_code=True), done["seconds"]  # code the recipe runs anyway
    t0 = time.perf_counter()
    again = ctx.resume and checkpoint_path_for(path).exists()
    if again:
        ctx.say(f"[{label}] continuing the interrupted fine-tuning from {checkpoint_path_for(path).name}")
    tuned = training.finetune(model, ctx.train_ds, settings, output=path, force=True, resume=again,
                              progress=ctx.progress, tracker=Prefixed(ctx.sink, f"{label}."))
    seconds = round(time.perf_counter() - t0, 1)
    ctx.state.mark(stage, seconds=seconds)
    return tuned, seconds


def pretrain_stage(ctx: RunContext, base: HardenedModel) -> tuple[HardenedModel, float | None]:
    """The start model of every row: ``base`` trained without attacks if the recipe has a pretrain stage."""
    if ctx.plan.pretrain is None:
        return base, None
    ctx.say(f"[start] clean pre-training of {ctx.plan.model.spec} on {ctx.plan.data['train']}")
    return finetune_stage(ctx, base, "start", ctx.plan.pretrain)


def apply_stage(ctx: RunContext, start: HardenedModel, transforms: list[str]) -> HardenedModel:
    """``start`` with ``transforms`` applied (``start`` itself for the baseline)."""
    return apply(start, transforms) if transforms else start


def _evaluate_attack(ctx: RunContext, model: HardenedModel, label: str, attack: str,
                     file: Path | None) -> EvaluationReport:
    ev, eps = ctx.plan.evaluate, ctx.plan.eps
    stage, path = f"evaluate:{label}:{attack}", ctx.out / f"{label}.eval-{attack}.json"
    if ctx.state.finished(stage) is not None:
        ctx.say(f"[{label}] {attack}: finished earlier, read from {path.name}")
        return EvaluationReport.from_dict(json.loads(path.read_text()))
    ctx.say(f"[{label}] evaluating: {attack} at eps {eps * 255:.3g}/255 on {ev.n} test images")
    report = evaluation.evaluate(
        model, ctx.test_ds, ev, attack=attack, eps=eps, fast=ev.fast and attack == "autoattack",
        steps=ev.steps if takes_steps(attack) else None, into=file, report=path, resume=ctx.resume,
        progress=ctx.progress, tracker=Prefixed(ctx.sink, f"{label}.{attack}."))
    ctx.state.mark(stage)
    return report


def evaluate_stage(ctx: RunContext, model: HardenedModel, label: str, file: Path | None) -> list[EvaluationReport]:
    """Evaluate ``model`` under each of the recipe's attacks and write ``OUT/<label>.report.json``.

    ``file`` is the model's safetensors file the reports are added to (None: a model with no file).
    """
    reports = [_evaluate_attack(ctx, model, label, attack, file) for attack in ctx.plan.attacks]
    if ctx.main:
        with atomic_path(ctx.out / f"{label}.report.json") as tmp:
            tmp.write_text(json.dumps([r.to_dict() for r in reports], indent=2) + "\n")
    return reports
