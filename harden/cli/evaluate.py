"""``harden evaluate``: robust accuracy with AutoAttack (pyautoattack) or a quick attack."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from harden.cli import main
from harden.cli._options import model_options, resolve_model, schema_options, show_progress
from harden.errors import UsageError
from harden.schemas.evaluate import EvaluateConfig, make_evaluate_config

if TYPE_CHECKING:
    from harden.evaluation.report_types import EvaluationReport


@main.command("evaluate")
@click.argument("model")
@model_options
@click.option("--data", default=None, metavar="SPEC",
              help="sample, imagefolder:ROOT, cifar10:ROOT or cifar100:ROOT.")
@schema_options(EvaluateConfig)
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="PNG for --eps-sweep (default: REPORT.eps-sweep.png or eps-sweep.png).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of the table.")
@click.option("--track", default=None, metavar="mlflow[:URI]",
              help="Record the run in MLflow (parameters, metrics, artefacts); URI default: MLflow's local store.")
@click.option("--threats", default=None, metavar="LIST",
              help="With --out-card: the threats of a report card, comma-separated, each adversarial one with an "
                   "optional eps: linf, l2, l1, corruptions, e.g. linf:4/255,l2,corruptions [default: "
                   "linf,l2,corruptions; eps Linf 8/255, L2 0.5, L1 12]. The same -n, --seed, --random-subset and "
                   "--attack/--fast for all (add --fast for a cheap card).")
@click.option("--out-card", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Write a report card into DIR: each threat's report (THREAT.json, as it finishes; --resume "
                   "skips those done with the same settings), card.json, card.md and its PNGs.")
def evaluate_command(model: str, data: str | None, plot: str | None, quiet: bool, as_json: bool,
                     track: str | None = None, threats: str | None = None, out_card: str | None = None, *,
                     num_classes: int | None, input_size: int | None,
                     weights: str | None, pretrained: bool, mean: str | None, std: str | None, trust_code: bool,
                     **settings: Any) -> None:
    """Evaluate MODEL (a harden file or a model spec) against adversarial attacks on --data."""
    from harden import tracking

    tracking.check_track(track)
    model_opts = {"num_classes": num_classes, "input_size": input_size, "weights": weights, "pretrained": pretrained,
                  "mean": mean, "std": std, "trust_code": trust_code}
    if threats is not None or out_card is not None:
        from harden.cli.report_card import card_command

        card_command(model, data, threats, out_card, settings, quiet=quiet, as_json=as_json, plot=plot, track=track,
                     model_opts=model_opts)
        return
    report = settings["report"]
    with tracking.Session(track, run_name=Path(report).stem if report else None) as sink:
        _evaluate(model, data, settings, plot=plot, quiet=quiet, as_json=as_json, sink=sink, model_opts=model_opts)


def _evaluate(model: str, data: str | None, settings: dict[str, Any], *, plot: str | None, quiet: bool,
              as_json: bool, sink: Any, model_opts: dict[str, Any]) -> None:
    from harden import evaluation
    from harden.data import check_spec
    from harden.runtime import distributed as hd

    if not data:
        raise UsageError("--data is required: sample, imagefolder:ROOT, cifar10:ROOT or cifar100:ROOT")
    # everything that can be checked without loading anything, first
    cfg = make_evaluate_config(**settings)
    if cfg.threat == "corruptions":
        _evaluate_corruptions(model, data, cfg, quiet=quiet, as_json=as_json, sink=sink, model_opts=model_opts)
        return
    if data.startswith("npyc:"):
        raise UsageError("npyc:DIR is a folder of corrupted images; evaluate on it with --threat corruptions")
    plan, sweep = evaluation.check_settings(cfg)
    check_spec(data, cfg.split, download=cfg.download)
    report, resume = cfg.report, cfg.resume
    progress_file = Path(f"{report}.progress") if report else None
    first_rank = hd.env_rank() == 0  # prints and writes; the others stay quiet
    if progress_file is not None and progress_file.exists() and not resume and first_rank:
        click.echo(f"note: starting over; '{progress_file}' holds an unfinished run (pass --resume to continue it)",
                   err=True)

    net = resolve_model(model, **model_opts)
    show_bar = show_progress(quiet) and first_rank
    try:
        result = evaluation.evaluate(net, data, cfg, progress=show_bar, tracker=sink)
    except KeyboardInterrupt:
        if progress_file is not None and progress_file.exists():
            click.echo(f"progress saved in {progress_file}; continue with the same command and --resume", err=True)
        raise
    if first_rank:
        _show_result(result, cfg, swept=sweep is not None, plot=plot, as_json=as_json, sink=sink,
                     progress_file=progress_file)


def _show_result(result: Any, cfg: EvaluateConfig, *, swept: bool, plot: str | None, as_json: bool, sink: Any,
                 progress_file: Path | None) -> None:
    """Print an evaluation's table (or JSON), draw its eps sweep, and say what was written."""
    from harden import evaluation

    report = cfg.report
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        if result.resumed:
            click.echo(f"resumed from {progress_file}")
        click.echo(evaluation.summary_table(result))
        if swept:
            click.echo("")
            click.echo(evaluation.sweep_table(result))
    if swept:
        target = plot or (f"{Path(report).with_suffix('')}.eps-sweep.png" if report else "eps-sweep.png")
        evaluation.plot_sweep(result, target)
        sink.artifact(target)
        click.echo(f"wrote {target}", err=as_json)
    for w in result.warnings:
        click.echo(f"warning [{w.name}]" + (f" (x{w.count})" if w.count > 1 else "") + f": {w.message}", err=True)
    if report:
        click.echo(f"wrote {report}", err=as_json)
    if cfg.into:
        click.echo(f"stored the report in {cfg.into}", err=as_json)


def _warning_lines(result: dict[str, Any]) -> None:
    for w in result["warnings"]:
        line = f"warning [{w['name']}]" + (f" (x{w['count']})" if w.get("count", 1) > 1 else "") + f": {w['message']}"
        click.echo(line, err=True)


def _evaluate_corruptions(model: str, data: str, cfg: EvaluateConfig, *, quiet: bool, as_json: bool, sink: Any,
                          model_opts: dict[str, Any]) -> None:
    """``--threat corruptions``: accuracy by corruption type and severity, as a table or JSON."""
    from harden import evaluation
    from harden.evaluation.corruption_eval import check_corruption_settings
    from harden.evaluation.corruption_report import corruption_table
    from harden.runtime import distributed as hd

    check_corruption_settings(cfg, data)
    net = resolve_model(model, **model_opts)
    first_rank = hd.env_rank() == 0
    result = evaluation.evaluate(net, data, cfg, progress=show_progress(quiet) and first_rank, tracker=sink)
    if not first_rank:
        return
    click.echo(json.dumps(result, indent=2) if as_json else corruption_table(result))
    _warning_lines(result)
    if cfg.report:
        click.echo(f"wrote {cfg.report}", err=as_json)


def _read_report(path: str) -> EvaluationReport:
    """The report in the JSON file ``path`` (a recipe's one-attack list too), or a one-line UsageError."""
    from harden.evaluation.report_types import EvaluationReport, ReportError

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
    try:
        return EvaluationReport.from_dict(report)
    except ReportError as exc:
        raise UsageError(f"'{path}' is not an evaluation report: {exc}") from None


@main.command("compare")
@click.argument("report_a", metavar="A.json|CARD_A/")
@click.argument("report_b", metavar="B.json|CARD_B/")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def compare_command(report_a: str, report_b: str, as_json: bool) -> None:
    """Compare two evaluation reports of the same test images: is B really more accurate or robust than A?

    Counts the images only one model gets right (clean) or withstands (robust) and gives the exact
    McNemar p-value, which tells a real difference from the noise of n images. Given two report card
    folders (--out-card), compares them threat by threat, one line each.
    """
    from harden.stats import compare_reports, comparison_table

    if Path(report_a).is_dir() or Path(report_b).is_dir():
        from harden.cli.report_card import compare_cards_command

        compare_cards_command(report_a, report_b, as_json=as_json)
        return

    a, b = _read_report(report_a), _read_report(report_b)
    result = compare_reports(a, b)
    if as_json:
        click.echo(json.dumps({"a": report_a, "b": report_b, **result}, indent=2))
        return
    click.echo(f"A  {report_a}  ({a.model.name})")
    click.echo(f"B  {report_b}  ({b.model.name})")
    click.echo(comparison_table(result))
