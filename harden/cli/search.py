"""``harden search``: find the hardening that pays for this model and this budget, measured."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import click

from harden.cli import main
from harden.cli._options import model_options, schema_options, show_progress
from harden.schemas.fields import settings_of
from harden.schemas.finetune import FinetuneConfig, make_config
from harden.schemas.model import ModelSpec
from harden.schemas.search import SearchConfig, make_search_config

SEARCH_FIELDS = tuple(f.name for f in dataclasses.fields(SearchConfig))
MODEL_FIELDS = tuple(name for name, (_, s) in settings_of(ModelSpec).items() if s.cli)


def finetune_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options of ``harden finetune`` that shape one training run: those of its schema, ``FinetuneConfig``."""
    return schema_options(FinetuneConfig)(fn)


@main.command("search")
@click.argument("model")
@model_options
@click.option("--data", required=True, metavar="SPEC", help="Training data: sample, imagefolder:ROOT, cifar10:ROOT.")
@schema_options(SearchConfig)
@finetune_options
@click.option("--download", is_flag=True, help="Allow the data source to download its data.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def search_command(model: str, data: str, download: bool, quiet: bool, trust_code: bool, **options: Any) -> None:
    """Search harden's transforms for MODEL under a budget, fine-tuning and measuring each candidate."""
    from harden.searching import search

    study = make_search_config(**{k: options.pop(k) for k in SEARCH_FIELDS})  # fails before any model loads
    given = {k: options.pop(k) for k in MODEL_FIELDS}
    training = make_config(**options)
    # the same starting weights in every process, and in `harden run best.yaml` (the spec's seed)
    spec = ModelSpec.of({**given, "spec": model, "seed": training.seed})
    base = spec.build(trust_code=trust_code)
    sampler_seed = training.seed if study.storage is None else None
    search(base, data, study, training, model_block=spec.recipe_block(), sampler_seed=sampler_seed,
           progress=show_progress(quiet), echo=click.echo, download=download)
