"""The settings of one ``harden run``, resolved from a checked recipe: output folder, stages, models."""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harden.errors import UsageError
from harden.recipes.schema import Recipe
from harden.schemas.evaluate import EvaluateConfig, make_evaluate_config
from harden.schemas.fields import parse_number
from harden.schemas.finetune import FinetuneConfig, make_config
from harden.schemas.model import ModelSpec

RECIPE_ONLY = ("attacks", "start")  # evaluate keys of a recipe that are not evaluation settings


@dataclass(frozen=True)
class RunPlan:
    """What a run does: its values (a copy of the recipe's, which the run's resume state fingerprints), where
    it writes, and each stage's typed settings."""

    values: dict[str, Any]
    out: Path
    model: ModelSpec  # the base model (weights beside the recipe found)
    finetune: FinetuneConfig  # the settings every variant is fine-tuned with
    pretrain: FinetuneConfig | None  # the clean pre-training of the base model, if the recipe asks for one
    evaluate: EvaluateConfig  # eps defaults to fine-tuning's, images are a random subset unless said
    evaluate_start: bool  # the starting model is evaluated too
    attacks: list[str]
    variants: list[tuple[str, list[str]]]  # (name, transforms) of each fine-tuned model, the baseline first

    @property
    def eps(self) -> float:
        """The evaluation's eps, as a number."""
        return parse_number(self.evaluate.eps)

    @property
    def data(self) -> dict[str, Any]:
        """The recipe's data section."""
        return self.values["data"]


def recipe_evaluation(values: dict[str, Any], finetune_eps: float | None = None) -> EvaluateConfig:
    """The evaluation settings of a recipe's values: its ``evaluate:`` keys, eps defaulting to fine-tuning's,
    the images a random subset unless the recipe says otherwise."""
    eps = finetune_eps if finetune_eps is not None else (values.get("finetune") or {}).get("eps", FinetuneConfig.eps)
    ev = {k: value for k, value in (values.get("evaluate") or {}).items() if k not in RECIPE_ONLY}
    return make_evaluate_config(**{"eps": eps, "random_subset": True, **ev})


def plan_run(recipe: Recipe, out_dir: str | os.PathLike[str] | None) -> RunPlan:
    """The :class:`RunPlan` of ``recipe`` writing to ``out_dir`` (default ``runs/<recipe name>``)."""
    v = copy.deepcopy(recipe.values)
    out = Path(out_dir) if out_dir is not None else Path("runs") / recipe.name
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out '{out}' exists and is not a folder")
    ft = dict(v.get("finetune") or {})
    if ft.get("pseudo_label"):  # a teacher file beside the recipe, as for model.weights
        ft["pseudo_label"] = recipe.local_path(ft["pseudo_label"])
    if ft.get("extra_data"):  # data paths too
        ft["extra_data"] = recipe.data_spec(ft["extra_data"])
    data = v["data"]
    for key in ("train", "test"):
        if key in data:
            data[key] = recipe.data_spec(data[key])
    finetune = make_config(**ft)
    evaluate = recipe_evaluation(v, finetune.eps)
    model = ModelSpec.of(v["model"])
    variants: list[tuple[str, list[str]]] = [("baseline", [])] if v.get("baseline", True) else []
    variants += list(v["variants"].items()) if "variants" in v else [("hardened", list(v["transforms"]))]
    pretrain = make_config(**{"method": "clean", **v["pretrain"]}) if v.get("pretrain") else None
    return RunPlan(values=v, out=out, model=dataclasses.replace(model, weights=recipe.local_path(model.weights)),
                   finetune=finetune, pretrain=pretrain, evaluate=evaluate,
                   evaluate_start=bool((v.get("evaluate") or {}).get("start", True)),
                   attacks=list((v.get("evaluate") or {}).get("attacks", ["pgd"])), variants=variants)
