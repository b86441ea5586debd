"""``harden search``: find the hardening that pays for this model and this budget, measured."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from harden.cli import main
from harden.cli._options import _floats, model_options, resolve_model, schema_options, show_progress
from harden.schemas.finetune import FinetuneConfig
from harden.schemas.search import SearchConfig, make_search_config

SEARCH_FIELDS = tuple(f.name for f in dataclasses.fields(SearchConfig))


def finetune_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options of ``harden finetune`` that shape one training run: those of its schema, ``FinetuneConfig``."""
    return schema_options(FinetuneConfig)(fn)


def _model_block(model: str, *, num_classes: int | None, input_size: int | None, weights: str | None,
                 pretrained: bool, mean: str | None, std: str | None, seed: int) -> dict[str, Any] | None:
    """How best.yaml rebuilds the starting model (None for a harden file: its recipe says it)."""
    from harden.cli._options import is_model_file

    if is_model_file(model):
        return None
    return {"spec": model, "num_classes": num_classes, "input_size": input_size,
            "weights": str(Path(weights).resolve()) if weights else None, "pretrained": pretrained or None,
            "mean": list(_floats(mean, "--mean") or []) or None, "std": list(_floats(std, "--std") or []) or None,
            "seed": seed}


@main.command("search")
@click.argument("model")
@model_options
@click.option("--data", required=True, metavar="SPEC", help="Training data: sample, imagefolder:ROOT, cifar10:ROOT.")
@schema_options(SearchConfig)
@finetune_options
@click.option("--download", is_flag=True, help="Allow the data source to download its data.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def search_command(model: str, data: str, download: bool, quiet: bool, num_classes, input_size, weights, pretrained,
                   mean, std, trust_code, **options: Any) -> None:
    """Search harden's transforms for MODEL under a budget, fine-tuning and measuring each candidate."""
    import torch

    from harden.searching import search

    study = {k: options.pop(k) for k in SEARCH_FIELDS}
    make_search_config(**study)  # fails before any model loads
    seed = options.get("seed") or 0
    with torch.random.fork_rng(devices=[]):  # the same starting weights in every process (as `harden run`)
        torch.manual_seed(seed)
        base = resolve_model(model, num_classes=num_classes, input_size=input_size, weights=weights,
                             pretrained=pretrained, mean=mean, std=std, trust_code=trust_code)
    block = _model_block(model, num_classes=num_classes, input_size=input_size, weights=weights,
                         pretrained=pretrained, mean=mean, std=std, seed=seed)
    sampler_seed = options.get("seed") if study["storage"] is None else None
    search(base, data, **study, model_block=block, sampler_seed=sampler_seed, progress=show_progress(quiet),
           echo=click.echo, download=download, **options)
