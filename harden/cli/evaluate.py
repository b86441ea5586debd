"""``harden evaluate``: robust accuracy with AutoAttack (pyautoattack) or a quick attack."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from harden.cli import main
from harden.cli._options import model_options, resolve_model, show_progress
from harden.errors import UsageError


def _int(text: str | None, what: str, *, allow: tuple[str, ...] = ()) -> int | str | None:
    if text is None or text in allow:
        return text
    try:
        value = int(text)
    except ValueError:
        extra = f" or {' or '.join(allow)}" if allow else ""
        raise UsageError(f"{what} must be a whole number{extra}, got '{text}'") from None
    return value


@main.command("evaluate")
@click.argument("model")
@model_options
@click.option("--data", default=None, metavar="SPEC",
              help="sample, imagefolder:ROOT, cifar10:ROOT or cifar100:ROOT.")
@click.option("--split", default="test", show_default=True, help="Split of the data (train or test).")
@click.option("--download", is_flag=True, help="Download cifar10/cifar100 into ROOT if missing.")
@click.option("--eps", default="8/255", show_default=True, help="Perturbation size: 8/255 or 0.031.")
@click.option("--norm", default="Linf", show_default=True, help="Threat model: Linf or L2.")
@click.option("--attack", default="autoattack", show_default=True, help="autoattack, apgd-ce, pgd, fgsm or cw.")
@click.option("--fast", is_flag=True, help="AutoAttack's APGD-CE then APGD-T only (about a third of the cost).")
@click.option("-n", "--num-examples", "n", default="1000", show_default=True,
              help="Number of examples (or all).")
@click.option("--random-subset", is_flag=True, help="A random subset of n (seeded by --seed), not the first n.")
@click.option("--skip-bad-images", is_flag=True,
              help="Leave out images that cannot be decoded (the report counts them) instead of stopping.")
@click.option("--batch-size", default="auto", show_default=True, help="Batch size, or auto (largest that fits).")
@click.option("--seed", default="0", show_default=True, help="Seed of the attacks (and of --random-subset).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--steps", default=None, help="Steps of --attack pgd/cw (default 20).")
@click.option("--step-size", default=None, help="Step size of pgd/cw/fgsm (default eps/4; eps for fgsm).")
@click.option("--report", type=click.Path(dir_okay=False), default=None,
              help="Write the JSON report here (progress is kept beside it for --resume).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from REPORT.progress.")
@click.option("--into", type=click.Path(dir_okay=False), default=None,
              help="Also store the report in this harden model file's metadata.")
@click.option("--eps-sweep", default=None, metavar="LIST",
              help="Robust accuracy at each eps of a list, e.g. 0,1/255,2/255,4/255,8/255 (table + PNG).")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="PNG for --eps-sweep (default: REPORT.eps-sweep.png or eps-sweep.png).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of the table.")
@click.option("--track", default=None, metavar="mlflow[:URI]",
              help="Record the run in MLflow (parameters, metrics, artefacts); URI default: MLflow's local store.")
def evaluate_command(model: str, data: str | None, split: str, download: bool, eps: str, norm: str, attack: str,
                     fast: bool, n: str, random_subset: bool, skip_bad_images: bool, batch_size: str, seed: str,
                     device: str,
                     steps: str | None, step_size: str | None, report: str | None, resume: bool, into: str | None,
                     eps_sweep: str | None, plot: str | None, quiet: bool, as_json: bool, track: str | None = None,
                     **model_opts) -> None:
    """Evaluate MODEL (a harden file or a model spec) against adversarial attacks on --data."""
    from harden import tracking

    tracking.check_track(track)
    with tracking.Session(track, run_name=Path(report).stem if report else None) as sink:
        _evaluate(model, data, split, download, eps, norm, attack, fast, n, random_subset, skip_bad_images,
                  batch_size, seed, device, steps, step_size, report, resume, into, eps_sweep, plot, quiet, as_json,
                  sink, model_opts)


def _evaluate(model: str, data: str | None, split: str, download: bool, eps: str, norm: str, attack: str,
              fast: bool, n: str, random_subset: bool, skip_bad_images: bool, batch_size: str, seed: str,
              device: str, steps: str | None, step_size: str | None, report: str | None, resume: bool,
              into: str | None, eps_sweep: str | None, plot: str | None, quiet: bool, as_json: bool, sink: Any,
              model_opts: dict[str, Any]) -> None:
    from harden import distributed as hd
    from harden import evaluation
    from harden.data import check_spec

    if not data:
        raise UsageError("--data is required: sample, imagefolder:ROOT, cifar10:ROOT or cifar100:ROOT")
    # everything that can be checked without loading anything, first
    n_steps = _int(steps, "--steps")
    step = evaluation.parse_eps(step_size, norm="L2")[0] if step_size else None
    plan = evaluation.plan_attack(attack, eps=eps, norm=norm, fast=fast, seed=int(_int(seed, "--seed") or 0),
                                  steps=n_steps, step_size=step)  # type: ignore[arg-type]
    sweep = evaluation.parse_eps_list(eps_sweep, norm=norm) if eps_sweep is not None else None
    count = _int(n, "--num-examples", allow=("all",))
    if count != "all" and count is not None and int(count) <= 0:
        raise UsageError(f"-n/--num-examples must be positive, got {n}")
    bs = _int(batch_size, "--batch-size", allow=("auto",))
    if isinstance(bs, int) and bs <= 0:
        raise UsageError(f"--batch-size must be positive, got {batch_size}")
    if resume and not report:
        raise UsageError("--resume needs --report PATH (progress is kept next to the report)")
    if into:
        from harden.serialization import read_provenance

        read_provenance(into)
    check_spec(data, split, download=download)
    progress_file = Path(f"{report}.progress") if report else None
    first_rank = hd.env_rank() == 0  # prints and writes; the others stay quiet
    if progress_file is not None and progress_file.exists() and not resume and first_rank:
        click.echo(f"note: starting over; '{progress_file}' holds an unfinished run (pass --resume to continue it)",
                   err=True)

    net = resolve_model(model, **model_opts)
    show_bar = show_progress(quiet) and first_rank
    try:
        result = evaluation.evaluate(
            net, data, attack=plan.attack, eps=eps, norm=plan.norm, fast=fast,
            n=None if count == "all" else int(count or 1000), seed=plan.seed, batch_size=bs, device=device,
            split=split, random_subset=random_subset, download=download, steps=n_steps,  # type: ignore[arg-type]
            step_size=step, report=report, resume=resume, into=into, eps_sweep=eps_sweep, progress=show_bar,
            skip_bad_images=skip_bad_images, tracker=sink)
    except KeyboardInterrupt:
        if progress_file is not None and progress_file.exists():
            click.echo(f"progress saved in {progress_file}; continue with the same command and --resume", err=True)
        raise
    if not first_rank:
        return
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        if result.get("resumed"):
            click.echo(f"resumed from {progress_file}")
        click.echo(evaluation.summary_table(result))
        if sweep is not None:
            click.echo("")
            click.echo(evaluation.sweep_table(result))
    if sweep is not None:
        target = plot or (f"{Path(report).with_suffix('')}.eps-sweep.png" if report else "eps-sweep.png")
        evaluation.plot_sweep(result, target)
        sink.artifact(target)
        click.echo(f"wrote {target}", err=as_json)
    for w in result["warnings"]:
        line = f"warning [{w['name']}]" + (f" (x{w['count']})" if w.get("count", 1) > 1 else "") + f": {w['message']}"
        click.echo(line, err=True)
    if report:
        click.echo(f"wrote {report}", err=as_json)
    if into:
        click.echo(f"stored the report in {into}", err=as_json)


def _read_report(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"no report at '{path}'; give the JSON that `harden evaluate --report` writes")
    try:
        report = json.loads(p.read_text())
    except (ValueError, UnicodeDecodeError):
        raise UsageError(f"'{path}' is not a JSON report; give the JSON that `harden evaluate --report` writes") \
            from None
    if isinstance(report, list):  # a recipe's NAME.report.json holds one report per attack
        if len(report) != 1:
            attacks = ", ".join(str(r.get("attack")) for r in report if isinstance(r, dict))
            raise UsageError(f"'{path}' holds {len(report)} reports ({attacks}); compare one attack's reports, "
                             "e.g. the NAME.eval-ATTACK.json files that `harden run` writes")
        report = report[0]
    return report


@main.command("compare")
@click.argument("report_a", metavar="A.json")
@click.argument("report_b", metavar="B.json")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def compare_command(report_a: str, report_b: str, as_json: bool) -> None:
    """Compare two evaluation reports of the same test images: is B really more accurate or robust than A?

    Counts the images only one model gets right (clean) or withstands (robust) and gives the exact
    McNemar p-value, which tells a real difference from the noise of n images.
    """
    from harden.stats import compare_reports, comparison_table

    a, b = _read_report(report_a), _read_report(report_b)
    result = compare_reports(a, b)
    if as_json:
        click.echo(json.dumps({"a": report_a, "b": report_b, **result}, indent=2))
        return
    click.echo(f"A  {report_a}  ({a.get('model', {}).get('spec')})")
    click.echo(f"B  {report_b}  ({b.get('model', {}).get('spec')})")
    click.echo(comparison_table(result))
