"""The settings of one ``harden run``, resolved from a checked recipe: output folder, stages, models."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harden.errors import UsageError
from harden.recipes.schema import Recipe
from harden.schemas.finetune import FinetuneConfig


@dataclass(frozen=True)
class RunPlan:
    """What a run does: its values (a copy of the recipe's), where it writes, and each stage's settings."""

    values: dict[str, Any]
    out: Path
    finetune: dict[str, Any]  # the settings every variant is fine-tuned with
    pretrain: dict[str, Any] | None  # the clean pre-training of the base model, if the recipe asks for one
    evaluate: dict[str, Any]
    attacks: list[str]
    eps: float
    variants: list[tuple[str, list[str]]]  # (name, transforms) of each fine-tuned model, the baseline first

    @property
    def model(self) -> dict[str, Any]:
        """The recipe's model section."""
        return self.values["model"]

    @property
    def data(self) -> dict[str, Any]:
        """The recipe's data section."""
        return self.values["data"]


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
    ev = dict(v.get("evaluate") or {})
    variants: list[tuple[str, list[str]]] = [("baseline", [])] if v.get("baseline", True) else []
    variants += list(v["variants"].items()) if "variants" in v else [("hardened", list(v["transforms"]))]
    return RunPlan(values=v, out=out, finetune=ft, pretrain=v.get("pretrain"), evaluate=ev,
                   attacks=list(ev.get("attacks", ["pgd"])), eps=ev.get("eps", ft.get("eps", FinetuneConfig.eps)),
                   variants=variants)
