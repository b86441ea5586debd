"""``harden search``: find the hardening that pays for this model and this budget, measured."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from harden.cli import main
from harden.cli._options import _floats, model_options, resolve_model, show_progress
from harden.cli.finetune import FINETUNE_COMMAND_ONLY, finetune_command
from harden.errors import UsageError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def finetune_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options of ``harden finetune`` that shape one training run, shared rather than declared again.

    Those are every option but the command's own (model, data, output, run control): the names of
    ``harden.training.FinetuneConfig``, without importing it (and torch) for ``--help``."""
    params = getattr(fn, "__click_params__", [])
    for param in reversed(finetune_command.params):
        if isinstance(param, click.Option) and param.name not in FINETUNE_COMMAND_ONLY:
            params.append(copy.deepcopy(param))
    fn.__click_params__ = params  # type: ignore[attr-defined]
    return fn


def parse_duration(text: str | None) -> float | None:
    """``"90s"``, ``"30m"``, ``"2h"``, ``"1d"`` or plain seconds -> seconds."""
    if text is None:
        return None
    m = _DURATION.match(text)
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"--timeout takes a positive duration such as 90s, 30m or 2h, got '{text}'")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


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
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for the study (study.db), pareto.json, pareto.png and best.yaml.")
@click.option("--budget-macs", default=None, metavar="3x|2G", help="Most MACs per image: a multiple of the base "
              "model's or an amount.")
@click.option("--budget-params", default=None, metavar="1.5x|20M", help="Most parameters: a multiple or an amount.")
@click.option("--trials", type=int, default=20, show_default=True,
              help="Trials the study holds in all (resumed runs and other processes included).")
@click.option("--timeout", default=None, metavar="2h", help="Stop starting trials after this long (90s, 30m, 2h).")
@click.option("--storage", default=None, metavar="URL",
              help="SQLAlchemy URL of a shared study (several processes may use it) [default: sqlite in --out].")
@click.option("--resume", is_flag=True, help="Continue the study in --out (or --storage).")
@click.option("--space", default=None, metavar="DIMS",
              help="Dimensions to search, comma-separated: stage-widths, last-stage-width, strides, activation, "
                   "upsample, or none [default: all that apply].")
@click.option("-t", "--transform", "extra", multiple=True, metavar="NAME[:k=v,...]",
              help="Also search this transform (any registered one, plugins included) on or off; repeatable.")
@click.option("--pruner", type=click.Choice(["halving", "hyperband", "median", "none"]), default="halving",
              show_default=True, help="How trials that fall behind are stopped (robust accuracy after each epoch).")
@click.option("--recipe-epochs", type=int, default=None,
              help="Epochs of best.yaml's fine-tuning (its full budget) [default: --epochs].")
@finetune_options
@click.option("--download", is_flag=True, help="Allow the data source to download its data.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def search_command(model: str, data: str, out_dir: str, budget_macs: str | None, budget_params: str | None,
                   trials: int, timeout: str | None, storage: str | None, resume: bool, space: str | None,
                   extra: tuple[str, ...], pruner: str, recipe_epochs: int | None, download: bool, quiet: bool,
                   num_classes, input_size, weights, pretrained, mean, std, trust_code, **settings: Any) -> None:
    """Search harden's transforms for MODEL under a budget, fine-tuning and measuring each candidate."""
    import torch

    from harden.searching import search

    seconds = parse_duration(timeout)
    if trials < 1:
        raise UsageError(f"--trials must be at least 1, got {trials}")
    with torch.random.fork_rng(devices=[]):  # the same starting weights in every process (as `harden run`)
        torch.manual_seed(settings.get("seed") or 0)
        base = resolve_model(model, num_classes=num_classes, input_size=input_size, weights=weights,
                             pretrained=pretrained, mean=mean, std=std, trust_code=trust_code)
    block = _model_block(model, num_classes=num_classes, input_size=input_size, weights=weights,
                         pretrained=pretrained, mean=mean, std=std, seed=settings.get("seed") or 0)
    search(base, data, out=out_dir, budget_macs=budget_macs, budget_params=budget_params, trials=trials,
           timeout=seconds, storage=storage, resume=resume, space=space, extra=extra, pruner=pruner,
           recipe_epochs=recipe_epochs, model_block=block,
           sampler_seed=settings.get("seed") if storage is None else None,
           progress=show_progress(quiet), echo=click.echo, download=download, **settings)
