"""``harden apply``, ``harden inspect`` and ``harden list``."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import click

import harden
from harden.cli import main
from harden.cli._options import model_options, resolve_model, schema_options
from harden.cli.finetune import finetune_summary
from harden.provenance import Provenance, weights_text
from harden.schemas.apply import ApplyConfig, make_apply_config

APPLY_FIELDS = tuple(f.name for f in dataclasses.fields(ApplyConfig))


class TransformOptionsCommand(click.Command):
    """``harden apply``, whose transform options are the shorthands the registered transforms declare
    (:class:`harden.transforms.Shorthand`), read when the command runs or shows its help."""

    _added: tuple[tuple[type, ...], list[click.Option]] | None = None

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        from harden.transforms import list_transforms

        params = super().get_params(ctx)
        classes = tuple(dict.fromkeys(list_transforms().values()))
        if self._added is None or self._added[0] != classes:  # built again when a transform is registered
            taken = {opt for p in params for opt in getattr(p, "opts", ())}
            self._added = (classes, [opt for opt in shorthand_options() if opt.opts[0] not in taken])
        at = next(i for i, p in enumerate(params) if p.name == "transforms")
        return params[:at] + self._added[1] + params[at:]


def shorthand_options() -> list[click.Option]:
    """One click option per shorthand of every registered transform, in the order the transforms apply."""
    from harden.transforms import list_transforms

    declared = [s for cls in dict.fromkeys(list_transforms().values()) for s in cls.shorthands]
    options = []
    for s in sorted(declared, key=lambda s: s.order):
        if s.param is None:
            options.append(click.Option([s.option], is_flag=True, help=s.help))
        else:
            options.append(click.Option([s.option], default=s.default, metavar=s.metavar or None, help=s.help,
                                        type=click.Choice(s.choices) if s.choices else None,
                                        show_default=s.default is not None))
    return options


@main.command("apply", cls=TransformOptionsCommand)
@click.argument("model")
@model_options
@schema_options(ApplyConfig)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def apply_command(model: str, as_json: bool, **options: Any) -> None:
    """Apply robustness transforms to MODEL (a model spec or a harden file).

    The transform options (--upsample, --stride-mod, ...) come from the installed transforms: each
    declares its own (see `harden list`).
    """
    from harden.transforms import list_transforms, shorthand_specs

    dests = {s.dest for cls in list_transforms().values() for s in cls.shorthands}
    shorthands = {k: options.pop(k) for k in list(options) if k in dests}
    cfg = make_apply_config(**{k: options.pop(k) for k in APPLY_FIELDS})
    specs = shorthand_specs(shorthands) + list(cfg.transforms)
    from harden.summary import model_facts

    base = resolve_model(model, **options)
    transforms = [harden.transforms.parse_transform(s) for s in specs]
    before = model_facts(base)
    start = time.perf_counter()
    hardened = harden.apply(base, transforms)
    elapsed = time.perf_counter() - start
    after = model_facts(hardened)
    new_entries = hardened.provenance.transforms[len(base.provenance.transforms):]
    if cfg.output:
        harden.save(hardened, cfg.output, overwrite=True)
    if as_json:
        click.echo(json.dumps({
            "model": hardened.spec,
            "transforms": [entry.to_dict() for entry in new_entries],
            "before": before.__dict__, "after": after.__dict__,
            "transform_seconds": round(elapsed, 3), "output": cfg.output,
        }, default=list, indent=2))
        return
    _echo_applied(hardened, new_entries, (before, after), elapsed, cfg.output)


def _echo_applied(hardened: Any, new_entries: list[Any], facts: tuple[Any, Any], elapsed: float,
                  output: str | None) -> None:
    """What ``harden apply`` did, for people: the model, each transform's changes, before and after."""
    from harden.model import normalization_text
    from harden.summary import before_after_table

    m = hardened.provenance.model
    click.echo(f"model: {hardened.spec}  ({hardened.num_classes} classes, "
               f"input {'x'.join(map(str, hardened.input_size))}, weights {weights_text(hardened.provenance)})")
    click.echo(f"normalization: {normalization_text(m.mean, m.std)}")
    for entry in new_entries:
        click.echo(f"transform {harden.transforms.make_transform(entry.name, entry.config).spec()}")
        for change in entry.changes:
            click.echo(f"  - {change}")
    if not new_entries:
        click.echo("no transforms given (see `harden list`)")
    click.echo("")
    click.echo(before_after_table(*facts))
    click.echo(f"\ntransform time: {elapsed:.2f}s")
    if output:
        click.echo(f"wrote {output}")


@main.command("inspect")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the provenance and reports as JSON.")
@click.option("--lipschitz", is_flag=True,
              help="Load the model and print an upper bound on its l2 Lipschitz constant, layer by layer.")
@click.option("--trust-code", is_flag=True,
              help="With --lipschitz: allow a file whose provenance names a user factory.")
def inspect_command(path: str, as_json: bool, lipschitz: bool = False, trust_code: bool = False) -> None:
    """Show the provenance and stored reports of a harden file."""
    from harden.serialization import read_metadata, read_provenance, read_reports

    read_metadata(path)
    prov = read_provenance(path)
    reports = read_reports(path)
    lip = None
    if lipschitz:
        from harden.lipschitz import lipschitz_bound

        lip = lipschitz_bound(harden.load(path, trust_code=trust_code))
    if as_json:
        out = {"recipe": prov.to_dict(), "reports": reports}  # the key 0.1.0 printed: scripts read it
        if lip is not None:
            out["lipschitz"] = lip.to_dict()
        click.echo(json.dumps(out, indent=2, sort_keys=True, default=str))
        return
    _echo_provenance(path, prov)
    click.echo(f"reports ({len(reports)}):")
    for r in reports:
        click.echo("  " + _report_line(r))
    if lip is not None:
        click.echo("")
        click.echo(lip.summary())
        click.echo(lip.table(only_nontrivial=True))
        trivial = sum(1 for r in lip.rows if r.norm == 1.0)
        if trivial:
            click.echo(f"({trivial} layers with norm 1 not shown: ReLUs, identities, ...)")


def _echo_provenance(path: str, prov: Provenance) -> None:
    """The model, transforms, fine-tuning, other recorded keys and versions, as ``harden inspect`` shows them."""
    m = prov.model
    click.echo(f"file: {path}")
    click.echo(f"model: {m.spec} (source {m.source}, name {m.name}, {m.num_classes} classes, "
               f"input {'x'.join(map(str, m.input_size))})")
    from harden.model import normalization_text

    click.echo(f"normalization: {normalization_text(m.mean, m.std)}")
    click.echo(f"weights: {weights_text(prov)}")
    if m.kwargs:
        click.echo(f"constructor arguments: {m.kwargs}")
    click.echo(f"transforms ({len(prov.transforms)}):")
    for entry in prov.transforms:
        cfg = ",".join(f"{k}={v}" for k, v in entry.config.items() if v is not None)
        part = "  (part of the model its source builds)" if entry.from_source else ""
        click.echo(f"  {entry.name}{':' + cfg if cfg else ''}  [{entry.provider}]{part}")
        for change in entry.changes:
            click.echo(f"    - {change}")
    if prov.finetune is not None:
        click.echo(f"finetune: {json.dumps(prov.finetune.to_dict(), sort_keys=True)[:400]}")
        for line in finetune_summary(prov.finetune):
            click.echo(f"  {line}")
    for key, extra in prov.extras.items():
        click.echo(f"{key}: {json.dumps(extra, sort_keys=True)[:400]}")
    click.echo("versions: " + ", ".join(f"{k} {v}" for k, v in sorted(prov.versions.items())))


def _report_line(stored: dict[str, Any]) -> str:
    """One line for a report stored in a model file: attack, threat, n, seed, accuracies, warnings."""
    from harden.evaluation.report_types import EvaluationReport, ReportError

    try:
        r = EvaluationReport.from_dict(stored)
    except ReportError:  # not a report harden wrote: its JSON
        return json.dumps(stored)[:200]
    line = (f"attack={r.attack} norm={r.norm} eps={r.eps} n={r.n} seed={r.seed} clean_acc={r.clean_acc} "
            f"robust_acc={r.robust_acc}")
    return line + (f" warnings={len(r.warnings)}" if r.warnings else "")


def _list_robustbench() -> None:
    try:
        from harden.sources.zoo.robustbench import entry_lines
    except ImportError:
        return
    click.echo("robustbench entries (robustbench:DATASET/THREAT/NAME; published clean / AutoAttack / best-known %, eps,"
               " citation; RobustBench leaderboard; best known: the lowest robust accuracy any attack found,"
               " AutoAttack's is an upper bound; [UNRELIABLE]: RobustBench flags the evaluation):")
    for line in entry_lines():
        click.echo(f"  {line}")


@main.command("list")
@click.option("--models", "show_models", default=None, metavar="PATTERN",
              help="Also list model names matching PATTERN (e.g. 'resnet*').")
def list_command(show_models: str | None) -> None:
    """List transforms (with their package), model sources and attacks."""
    from harden.sources import model_sources

    click.echo("transforms:")
    for name, cls in harden.list_transforms().items():
        params = ", ".join(f"{p.name}={p.default}" if not p.required else p.name for p in cls.params)
        click.echo(f"  {name:<18} {cls.summary}  [{cls.provider}]" + (f"  ({params})" if params else ""))
    click.echo("model sources:")
    for name, src in model_sources().items():
        click.echo(f"  {name + ':':<18} {src.description}")
    _list_robustbench()
    try:
        from harden.attacks import list_attacks
    except ImportError:
        pass
    else:
        click.echo("attacks:")
        for name, desc in list_attacks().items():
            click.echo(f"  {name:<18} {desc}")
    if show_models:
        import fnmatch

        for name, src in model_sources().items():
            hits = [n for n in src.names() if fnmatch.fnmatch(n, show_models)]
            if hits:
                click.echo(f"{name} models matching '{show_models}': " + ", ".join(hits[:200]))
