"""YAML recipes: a model, its transforms, fine-tuning and evaluation settings, run end to end.

A recipe names a model and the transforms that harden it; ``harden run`` (:func:`run_recipe`) then
runs apply -> finetune -> evaluate for the baseline (no transform) and for each hardened model alike,
from the same starting weights, and writes both models, their reports and a comparison table.
Recipe files are checked against a schema before anything runs: an unknown key or a wrong type is a
one-line error naming the key and its line (PyYAML's node marks give the lines). Example::

    name: quickstart
    model: {spec: timm:resnet10t, num_classes: 10, input_size: 32}
    data: {train: sample, test: sample}
    transforms: [activation:name=silu]
    finetune: {method: fgsm-rs, eps: 8/255, epochs: 3, lr: 0.05}
    evaluate: {attacks: [pgd], n: 200}

The package's modules, one job each: :mod:`~harden.recipes.schema` (the keys and the checker),
:mod:`~harden.recipes.parse` (reading a recipe, ``--set``, checks across keys),
:mod:`~harden.recipes.run_plan` (a run's settings), :mod:`~harden.recipes.state` (resume state),
:mod:`~harden.recipes.steps` (pre-training, apply, fine-tune, evaluate),
:mod:`~harden.recipes.compare` (the comparison table) and :mod:`~harden.recipes.run` (the pipeline).
"""

from __future__ import annotations

from harden.recipes.compare import comparison_markdown
from harden.recipes.parse import load_recipe, parse_recipe
from harden.recipes.run import run_recipe
from harden.recipes.schema import SCHEMA, Key, Recipe
from harden.recipes.state import RunState

__all__ = ["SCHEMA", "Key", "Recipe", "RunState", "comparison_markdown", "load_recipe", "parse_recipe", "run_recipe"]
