"""``harden evaluate --out-card DIR``: a report card of several threats, and ``harden compare`` of two cards."""

from __future__ import annotations

import json
from typing import Any

import click
from click.core import ParameterSource

from harden.errors import UsageError

# evaluate's options a card sets per threat: refused when given with --out-card
_PER_THREAT = {"threat": "--threat", "eps": "--eps", "norm": "--norm", "eps_sweep": "--eps-sweep",
               "report": "--report", "into": "--into"}


def _given(name: str) -> bool:
    ctx = click.get_current_context(silent=True)
    return ctx is not None and ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT)


def card_command(model: str, data: str | None, threats: str | None, out: str | None, settings: dict[str, Any], *,
                 quiet: bool, as_json: bool, plot: str | None, track: str | None, model_opts: dict[str, Any]) -> None:
    """Check everything that can be checked, then measure the card and print where it went."""
    from harden import tracking
    from harden.cli._options import resolve_model, show_progress
    from harden.evaluation.report_card import check_card_settings, parse_threats, report_card

    if out is None:
        raise UsageError("--threats needs --out-card DIR (the folder the card goes into)")
    if not data:
        raise UsageError("--data is required: sample, imagefolder:ROOT, cifar10:ROOT or cifar100:ROOT")
    for name, option in _PER_THREAT.items():
        if _given(name):
            raise UsageError(f"{option} does not apply with --out-card; give each threat's eps in --threats, "
                             "e.g. linf:4/255,l2:0.25")
    if plot is not None:
        raise UsageError("--plot does not apply with --out-card; the card draws its own pictures")
    resume = bool(settings.get("resume"))
    common = {k: v for k, v in settings.items() if k not in _PER_THREAT and k != "resume"}
    chosen = parse_threats(threats if threats is not None else "linf,l2,corruptions")
    check_card_settings(chosen, common, data)  # before the model loads
    tracking.check_track(track)
    net = resolve_model(model, **model_opts)
    card = report_card(net, data, [t.name + (f":{t.eps_text}" if t.eps_text else "") for t in chosen], out=out,
                       resume=resume, tracker=track, progress=show_progress(quiet),
                       trust_code=model_opts.get("trust_code", False), **common)
    if as_json:
        click.echo(json.dumps(card, indent=2))
        return
    click.echo(f"clean accuracy: {card['clean_acc']:.2f}%" if card["clean_acc"] is not None else "clean: -")
    for e in card["threats"]:
        eps = f" eps {e['eps_text']}" if e.get("eps_text") else ""
        click.echo(f"{e['threat']:<12} {e['accuracy']:6.2f}%  ({e['ci95'][0]:.1f}-{e['ci95'][1]:.1f}%){eps}")
    click.echo(f"wrote {out}/card.md and {out}/card.json")


def compare_cards_command(a: str, b: str, *, as_json: bool) -> None:
    """``harden compare CARD_A/ CARD_B/``: one line per threat."""
    from harden.evaluation.card_compare import card_comparison_table, compare_cards

    result = compare_cards(a, b)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"A  {a}  ({result['model_a'].get('label') or result['model_a'].get('spec')})")
    click.echo(f"B  {b}  ({result['model_b'].get('label') or result['model_b'].get('spec')})")
    click.echo(card_comparison_table(result))
