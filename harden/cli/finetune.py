"""``harden finetune`` (adversarial fine-tuning) and ``harden run`` (a YAML recipe end to end)."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import click

from harden.cli import main
from harden.cli._options import model_options, resolve_model, show_progress
from harden.errors import UsageError
from harden.provenance import ExtraDataEntry, FinetuneEntry

# Options of `harden finetune` that are not training settings (FinetuneConfig): `harden search` copies the others.
FINETUNE_COMMAND_ONLY = frozenset({"model", "num_classes", "input_size", "weights", "pretrained", "mean", "std",
                                   "trust_code", "data", "output", "resume", "force", "download", "quiet", "as_json",
                                   "track"})


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
@click.option("--method", type=click.Choice(["pgd", "trades", "mart", "fgsm-rs", "clean"]), default="pgd",
              show_default=True,
              help="PGD-AT (Madry), TRADES (Zhang), MART (Wang), FGSM with random start (Wong), or clean training.")
@click.option("--eps", default="8/255", show_default=True, help="Perturbation budget (images in [0, 1]).")
@click.option("--norm", type=click.Choice(["Linf", "L2"]), default="Linf", show_default=True)
@click.option("--steps", type=int, default=10, show_default=True, help="Attack steps during training.")
@click.option("--step-size", default=None, help="Attack step [default: 2.5*eps/steps, 1.25*eps for fgsm-rs].")
@click.option("--beta", default="6", show_default=True, help="TRADES / MART trade-off weight.")
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--lr", default="0.01", show_default=True, help="Peak learning rate (SGD, momentum 0.9).")
@click.option("--schedule", type=click.Choice(["cosine", "multistep", "onecycle", "constant"]), default="cosine",
              show_default=True)
@click.option("--batch-size", type=int, default=128, show_default=True, help="Per process.")
@click.option("--weight-decay", default="5e-4", show_default=True)
@click.option("--momentum", default="0.9", show_default=True)
@click.option("--ema", is_flag=True, help="Validate and keep an exponential moving average of the weights.")
@click.option("--ema-decay", default="0.999", show_default=True)
@click.option("--label-smoothing", default="0", show_default=True)
@click.option("--eps-warmup", default="1", show_default=True, metavar="EPOCHS",
              help="Ramp eps linearly from 0 over the first EPOCHS epochs (0: full eps from the start).")
@click.option("--val-n", type=int, default=512, show_default=True,
              help="Training examples held out for per-epoch validation (0: none, keep the last epoch).")
@click.option("--val-steps", type=int, default=10, show_default=True, help="PGD steps of the validation attack.")
@click.option("--attack-mode", type=click.Choice(["eval", "train"]), default="eval", show_default=True,
              help="Model mode while crafting training attacks (eval: batch-norm statistics untouched).")
@click.option("--no-bn-recalib", "bn_recalib", is_flag=True, flag_value=False, default=True,
              help="Do not recompute batch-norm statistics on clean data before training.")
@click.option("--no-augment", "augment", is_flag=True, flag_value=False, default=True,
              help="No random crop and flip.")
@click.option("--keep", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="Keep the best robust validation epoch or the last one.")
@click.option("--patience", type=int, default=None, help="Stop after this many epochs without a better robust score.")
@click.option("--train-n", type=int, default=None, help="Train on at most this many examples.")
@click.option("--lipschitz-reg", default="0", show_default=True, metavar="LAMBDA",
              help="Add LAMBDA times harden.lipschitz's spectral penalty to the loss.")
@click.option("--awp", default="0", show_default=True, metavar="GAMMA",
              help="Adversarial weight perturbation (Wu et al.) of relative size GAMMA, with pgd, trades or mart "
                   "(the paper: 0.01 for pgd, 0.005 for trades).")
@click.option("--awp-warmup", type=int, default=None, metavar="EPOCHS",
              help="Epochs before AWP starts [default: the paper's code, 0 for pgd, 10 for trades and mart].")
@click.option("--extra-data", default=None, metavar="SPEC",
              help="A second training source mixed into every batch (its train split).")
@click.option("--extra-fraction", default=None, metavar="F",
              help="Share of every batch taken from --extra-data, in (0, 1) [default: 0.5].")
@click.option("--pseudo-label", default=None, metavar="MODEL",
              help="Label --extra-data with the predictions (eval mode) of this teacher, a harden file.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
              help="auto: bf16 autocast on GPU, fp32 on CPU.")
@click.option("--channels-last/--no-channels-last", default=None, help="[default: on GPU only]")
@click.option("--compile", is_flag=True, help="torch.compile the model (GPU; first epoch pays the compile time).")
@click.option("--workers", type=int, default=None, help="Data decoding processes.")
@click.option("--skip-bad-images", is_flag=True,
              help="Leave out images that cannot be decoded (the model file counts them) instead of stopping.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seeds the data order, the attacks and a model spec's random initialisation.")
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

    base = resolve_model(model, num_classes=num_classes, input_size=input_size, weights=weights,
                         pretrained=pretrained, mean=mean, std=std, trust_code=trust_code,
                         init_seed=settings["seed"])
    result = finetune(base, data, output=output, resume=resume, force=force, download=download,
                      progress=show_progress(quiet), trust_code=trust_code, tracker=track, **settings)
    if not _is_main_process():
        return
    entry = result.provenance.finetune
    if as_json:
        click.echo(json.dumps(dataclasses.replace(entry, previous=None).to_dict(), indent=2, default=str))
        return
    val = entry.validation
    click.echo(f"fine-tuned {result.spec} with {entry.method} (eps {entry.eps * 255:.3g}/255, "
               f"{entry.epochs_run} epochs, {entry.seconds:.0f}s on {entry.device})")
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
