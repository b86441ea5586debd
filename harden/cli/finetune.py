"""``harden finetune`` (adversarial fine-tuning) and ``harden run`` (a YAML recipe end to end)."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import click

from harden.cli import main
from harden.cli._options import model_options, resolve_model, schema_options, show_progress
from harden.errors import UsageError
from harden.provenance import ExtraDataEntry, FinetuneEntry
from harden.schemas.finetune import FinetuneConfig


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0") or 0) == 0


def extra_data_text(info: ExtraDataEntry) -> str:
    """One line on a run's extra data: source, size, share of each batch, labels."""
    labels = f"pseudo-labelled by {info.teacher}" if info.labels == "pseudo" else "its own labels"
    return (f"{info.data} ({info.n} images): {info.per_batch} of every "
            f"{info.per_batch + info.main_per_batch} in a batch (fraction {info.fraction:g}), {labels}")


def finetune_summary(entry: FinetuneEntry) -> list[str]:
    """Lines for ``harden inspect``: the method and, when used, AWP and the extra data."""
    beta = f", beta {entry.beta:g}" if entry.beta is not None else ""
    lines = [f"method {entry.method}{beta}, {entry.epochs_run} epochs on {entry.data}"]
    if entry.awp is not None:
        lines.append(f"AWP gamma {entry.awp.gamma:g}, from epoch {entry.awp.warmup + 1}")
    if entry.extra_data is not None:
        lines.append("extra data " + extra_data_text(entry.extra_data))
    return lines


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}%"


@main.command("finetune")
@click.argument("model")
@model_options
@click.option("--data", required=True, metavar="SPEC", help="Training data: sample, imagefolder:ROOT, cifar10:ROOT.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Output harden .safetensors file.")
@schema_options(FinetuneConfig)
@click.option("--resume", is_flag=True, help="Continue an interrupted run from OUT.ckpt.pt.")
@click.option("--force", is_flag=True, help="Overwrite an existing output or start over despite a checkpoint.")
@click.option("--download", is_flag=True, help="Allow the data source to download its data.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print the finetune entry as JSON.")
@click.option("--track", default=None, metavar="mlflow[:URI]",
              help="Record the run in MLflow (parameters, metrics, artefacts); URI default: MLflow's local store.")
def finetune_command(model: str, data: str, output: str, resume: bool, force: bool, download: bool, quiet: bool,
                     as_json: bool, num_classes, input_size, weights, pretrained, mean, std, trust_code,
                     track: str | None = None, **settings: Any) -> None:
    """Adversarially fine-tune MODEL (a model spec or a harden file) on --data, writing -o OUT."""
    from harden.tracking import check_track
    from harden.training import curves_path_for, finetune

    check_track(track)
    # everything that can be checked without building the model, first
    from harden.data import check_spec
    from harden.schemas.finetune import make_config

    cfg = make_config(**settings)
    check_spec(data, "train", download=download)
    base = resolve_model(model, num_classes=num_classes, input_size=input_size, weights=weights,
                         pretrained=pretrained, mean=mean, std=std, trust_code=trust_code,
                         init_seed=cfg.seed)
    result = finetune(base, data, cfg, output=output, resume=resume, force=force, download=download,
                      progress=show_progress(quiet), trust_code=trust_code, tracker=track)
    if not _is_main_process():
        return
    entry = result.provenance.finetune
    if as_json:
        click.echo(json.dumps(dataclasses.replace(entry, previous=None).to_dict(), indent=2, default=str))
        return
    val = entry.validation
    from harden.model import normalization_text

    m = result.provenance.model
    click.echo(f"fine-tuned {result.spec} with {entry.method} (eps {entry.eps * 255:.3g}/255, "
               f"{entry.epochs_run} epochs, {entry.seconds:.0f}s on {entry.device})")
    click.echo(f"input {'x'.join(map(str, m.input_size))}, normalization {normalization_text(m.mean, m.std)}")
    for line in finetune_summary(entry)[1:]:  # AWP and extra data, when used
        click.echo(line)
    if val.n:
        click.echo(f"kept epoch {entry.kept_epoch}: clean {_pct(val.clean_acc)}, {val.attack} "
                   f"{_pct(val.robust_acc)} on {val.n} held-out training images")
    click.echo(f"wrote {output}")
    if entry.epochs_run:
        click.echo(f"curves {curves_path_for(output)}")


def _parse_sets(values: tuple[str, ...]) -> list[tuple[str, str]]:
    out = []
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set takes key=value (e.g. finetune.epochs=2), got '{item}'")
        out.append((key.strip(), value))
    return out


@main.command("run")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Output folder [default: runs/<recipe name>].")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe value, e.g. --set finetune.epochs=2 (repeatable).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--check", is_flag=True, help="Only validate the recipe and print it resolved.")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted run in the same --out folder: finished stages are kept.")
@click.option("--track", default=None, metavar="mlflow[:URI]",
              help="Record the run in MLflow (parameters, metrics, artefacts); overrides the recipe's tracking key.")
def run_command(recipe: str, out_dir: str | None, sets: tuple[str, ...], quiet: bool, check: bool,
                resume: bool, track: str | None = None) -> None:
    """Run a YAML recipe: apply -> finetune -> evaluate for the baseline and the hardened model."""
    from harden.recipes import load_recipe, run_recipe
    from harden.tracking import check_track

    check_track(track)
    spec = load_recipe(recipe, overrides=_parse_sets(sets))
    if check:
        import yaml

        click.echo(f"# {recipe}: valid")
        click.echo(yaml.safe_dump(spec.values, sort_keys=False).rstrip())
        return
    say = click.echo if _is_main_process() else None
    result = run_recipe(spec, out_dir=out_dir, progress=show_progress(quiet), echo=say, resume=resume,
                        tracker=track)
    if _is_main_process():
        click.echo("")
        click.echo(result["markdown"].rstrip())
        click.echo(f"\nwrote {result['out_dir']}")
