"""A robustness report card: several threats (Linf, L2, L1, corruptions) measured in one call on the same
images, each threat's report written into a folder as it finishes (``linf.json``, ``l2.json``, ``l1.json``,
``corruptions.json``), then ``card.json`` (``harden.card/1``) and a page, ``card.md``, with its pictures
(:mod:`~harden.evaluation.card_pages`).

Threats are written ``linf``, ``l2``, ``l1`` or ``corruptions``, an adversarial one optionally with its eps
(``linf:4/255``, ``l2:0.25``); the defaults are Linf 8/255, L2 0.5 and L1 12. With ``resume`` a threat whose
report is already in the folder, measured with the same settings (recorded beside it in
``THREAT.settings.json``), is read back instead of measured again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harden.errors import UsageError
from harden.evaluation.eps import parse_eps, parse_eps_list
from harden.runtime.atomic import write_text

CARD_FORMAT = "harden.card/1"
NORMS = {"linf": "Linf", "l2": "L2", "l1": "L1"}
DEFAULT_EPS = {"linf": "8/255", "l2": "0.5", "l1": "12"}
THREAT_NAMES = (*NORMS, "corruptions")
SWEEP_FRACTIONS = (0.25, 0.5)  # the eps sweep: 0, eps/4, eps/2 and eps
# settings that are the card's own (threats, folder) or that a card fixes per threat
_NOT_SETTINGS = ("threat", "eps", "norm", "eps_sweep", "report", "resume", "into")


@dataclass(frozen=True)
class Threat:
    """One threat of a card: its name (the file stem), and for an adversarial one its norm and eps."""

    name: str
    norm: str | None = None
    eps: float | None = None
    eps_text: str | None = None

    @property
    def adversarial(self) -> bool:
        return self.norm is not None


def parse_threats(value: str | Sequence[str]) -> list[Threat]:
    """``"linf,l2:0.25,corruptions"`` -> the threats, in the order given; one :class:`UsageError` otherwise."""
    words = [w.strip() for w in (value.split(",") if isinstance(value, str) else value) if str(w).strip()]
    if not words:
        raise UsageError(f"--threats names no threat; give some of {', '.join(THREAT_NAMES)}, e.g. linf,l2,corruptions")
    threats: list[Threat] = []
    for word in words:
        name, sep, eps = word.partition(":")
        name = name.strip().lower()
        if name not in THREAT_NAMES:
            raise UsageError(f"unknown threat '{word}' in --threats; the threats are {', '.join(THREAT_NAMES)}")
        if name in (t.name for t in threats):
            raise UsageError(f"--threats names {name} twice")
        if name == "corruptions":
            if sep:
                raise UsageError(f"'{word}': corruptions has no eps; write plain corruptions")
            threats.append(Threat(name))
            continue
        if sep and not eps.strip():
            raise UsageError(f"'{word}': give an eps after the colon, e.g. {name}:{DEFAULT_EPS[name]}")
        value, text = parse_eps(eps.strip() or DEFAULT_EPS[name], norm=NORMS[name])
        threats.append(Threat(name, NORMS[name], value, text))
    return threats


def sweep_text(threat: Threat) -> str:
    """The eps sweep of a card's curve: 0, eps/4, eps/2 and eps (as fractions of 255 where eps is one)."""
    assert threat.eps is not None and threat.eps_text is not None
    num, slash, den = threat.eps_text.partition("/")
    values = []
    for f in SWEEP_FRACTIONS:
        values.append(f"{float(num) * f:g}/{den}" if slash else f"{threat.eps * f:g}")
    return ",".join(["0", *values, threat.eps_text])


def check_card_settings(threats: Sequence[Threat], settings: dict[str, Any], data: Any) -> dict[str, Any]:
    """Check a card's settings before anything loads; the settings each threat's evaluation gets."""
    from harden.evaluation.api import check_settings
    from harden.evaluation.corruption_eval import check_corruption_settings
    from harden.schemas.evaluate import make_evaluate_config

    for name in _NOT_SETTINGS:
        if name in settings:
            raise UsageError(f"'{name}' is set per threat by a report card; give the threats as e.g. linf:4/255")
    common = {k: v for k, v in settings.items() if k not in _NOT_SETTINGS}
    corruptions = common.pop("corruptions", None)
    for t in threats:
        if t.adversarial:
            check_settings(make_evaluate_config(**common, norm=t.norm, eps=t.eps_text, eps_sweep=sweep_text(t)))
        else:
            check_corruption_settings(_corruption_config(common, corruptions), data)
    return {**common, "corruptions": corruptions}


_ATTACK_ONLY = ("attack", "fast", "steps", "step_size", "version", "bpda")


def _corruption_config(common: dict[str, Any], corruptions: str | None) -> Any:
    from harden.schemas.evaluate import make_evaluate_config

    plain = {k: v for k, v in common.items() if k not in _ATTACK_ONLY}
    return make_evaluate_config(**plain, threat="corruptions", corruptions=corruptions)


def threat_config(threat: Threat, settings: dict[str, Any]) -> Any:
    """The :class:`~harden.schemas.evaluate.EvaluateConfig` of one threat of a card."""
    from harden.schemas.evaluate import make_evaluate_config

    common = {k: v for k, v in settings.items() if k != "corruptions"}
    if not threat.adversarial:
        return _corruption_config(common, settings.get("corruptions"))
    return make_evaluate_config(**common, norm=threat.norm, eps=threat.eps_text, eps_sweep=sweep_text(threat))


def fingerprint(threat: Threat, settings: dict[str, Any], model_digest: str, data: Any) -> dict[str, Any]:
    """What a finished threat's report must have been measured with to be reused by ``resume``."""
    cfg = threat_config(threat, settings)
    keys = ("attack", "fast", "version", "steps", "step_size", "n", "seed", "random_subset", "split", "resize",
            "crop", "bpda", "norm", "eps", "corruptions") if threat.adversarial else \
        ("n", "seed", "random_subset", "split", "resize", "crop", "corruptions")
    values = {k: getattr(cfg, k) for k in keys}
    if threat.adversarial:
        values["eps"] = threat.eps
        values["sweep"] = [v for v, _ in parse_eps_list(sweep_text(threat), norm=threat.norm or "Linf")]
    plain = {k: _plain(v) for k, v in values.items()}
    return {"threat": threat.name, "model": model_digest, "data": str(data), **plain}


def _plain(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def finished(out: Path, threat: Threat, fp: dict[str, Any]) -> dict[str, Any] | None:
    """The report of ``threat`` already in ``out`` with the same settings, or None."""
    report, settings = out / f"{threat.name}.json", out / f"{threat.name}.settings.json"
    try:
        if json.loads(settings.read_text()) != fp:
            return None
        data = json.loads(report.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def save_threat(out: Path, threat: Threat, report: dict[str, Any], fp: dict[str, Any]) -> Path:
    """Write one threat's report, then the settings it was measured with (both atomically)."""
    path = write_text(out / f"{threat.name}.json", json.dumps(report, indent=2) + "\n")
    write_text(out / f"{threat.name}.settings.json", json.dumps(fp, indent=2) + "\n")
    return path


def threat_entry(threat: Threat, report: dict[str, Any]) -> dict[str, Any]:
    """One threat's line of ``card.json``: accuracy with interval, how it was measured, warnings."""
    base = {"file": f"{threat.name}.json", "n": report["n"], "seed": report["seed"],
            "clean_acc": report.get("clean_acc"), "warnings": [w.get("message") for w in report.get("warnings", [])]}
    if threat.adversarial:
        sweep = [{"eps": r["eps"], "eps_text": r["eps_text"], "robust_acc": r["robust_acc"]}
                 for r in report.get("eps_sweep") or []]
        return {"threat": threat.name, "kind": "adversarial", "norm": report["norm"], "eps": report["eps"],
                "eps_text": report["eps_text"], "attack": report["attack"], "attacks": report["attacks"],
                "version": report.get("version"), "accuracy": report["robust_acc"],
                "ci95": report["robust_ci95"], "eps_sweep": sweep, **base}
    return {"threat": threat.name, "kind": "corruptions", "corruptions": report["corruptions"],
            "severities": report["severities"], "source": report["source"], "accuracy": report["mean_corruption_acc"],
            "ci95": report["mean_corruption_ci95"], **base}


def build_card(threats: Sequence[Threat], reports: dict[str, dict[str, Any]], data: Any,
               pictures: dict[str, list[str]]) -> dict[str, Any]:
    """``card.json``: the model, its clean accuracy and each threat's figures."""
    first = reports[threats[0].name]
    clean = next((reports[t.name] for t in threats if reports[t.name].get("clean_acc") is not None), first)
    return {"format": CARD_FORMAT, "model": first["model"], "data": str(data),
            "selection": first.get("selection"), "n": first["n"], "seed": first["seed"],
            "clean_acc": clean.get("clean_acc"), "clean_ci95": clean.get("clean_ci95"),
            "threats": [{**threat_entry(t, reports[t.name]), "pictures": pictures.get(t.name, [])} for t in threats]}


def report_card(model: Any, data: Any = "sample", threats: str | Sequence[str] = "linf,l2,corruptions", *,
                out: str | Path, resume: bool = False, tracker: Any = None, progress: bool = False,
                trust_code: bool = False, **settings: Any) -> dict[str, Any]:
    """Measure ``model`` under each of ``threats`` on the same images and write the card into ``out``.

    ``settings`` are :func:`harden.evaluate`'s (``n``, ``seed``, ``random_subset``, ``attack``, ``fast``,
    ``steps``, ``corruptions``, ...), the same for every threat; eps and norm come with each threat. Each
    adversarial threat also sweeps eps over 0, eps/4, eps/2 and eps for its curve. ``resume`` reuses
    threats already finished in ``out`` with the same settings. ``tracker`` records each threat's figures
    under its name (``linf.robust_acc``, ``corruptions.mean_acc``) and the card's files as artefacts.
    Returns ``card.json``'s content.
    """
    from harden import tracking
    from harden.evaluation.api import _resolve_model

    chosen = parse_threats(threats)
    common = check_card_settings(chosen, settings, data)
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out-card '{out}' is a file; give a folder")
    net = _resolve_model(model, trust_code)
    with tracking.Session(tracker, run_name=folder.name) as tracked:
        reports = {t.name: _measure(net, data, t, common, folder, resume=resume, tracked=tracked,
                                    progress=progress) for t in chosen}
        return _write_card(net, data, chosen, common, reports, folder, tracked)


def _measure(model: Any, data: Any, threat: Threat, settings: dict[str, Any], out: Path, *, resume: bool,
             tracked: Any, progress: bool) -> dict[str, Any]:
    """One threat's report: read back (``resume``, same settings) or measured and saved."""
    from harden import tracking
    from harden.evaluation.api import evaluate
    from harden.runtime.store import state_digest

    fp = fingerprint(threat, settings, state_digest(model, short=True), data)
    done = finished(out, threat, fp) if resume else None
    if done is not None:
        return done
    sink = tracking.Prefixed(tracked, f"{threat.name}.") if threat.adversarial else tracked
    result = evaluate(model, data, threat_config(threat, settings), progress=progress, tracker=sink)
    report = result.to_dict() if threat.adversarial else dict(result)
    save_threat(out, threat, report, fp)
    tracked.artifact(out / f"{threat.name}.json")
    return report


def _write_card(model: Any, data: Any, threats: Sequence[Threat], settings: dict[str, Any],
                reports: dict[str, dict[str, Any]], out: Path, tracked: Any) -> dict[str, Any]:
    """The pictures, ``card.json`` and ``card.md``, each recorded as an artefact."""
    from harden.evaluation.card_pages import card_markdown, draw_pictures

    configs = {t.name: threat_config(t, settings) for t in threats}
    pictures = draw_pictures(model, data, threats, configs, reports, out)
    card = build_card(threats, reports, data, pictures)
    write_text(out / "card.json", json.dumps(card, indent=2) + "\n")
    write_text(out / "card.md", card_markdown(card))
    for name in ("card.md", "card.json", *(p["file"] for pics in pictures.values() for p in pics)):
        tracked.artifact(out / name)
    return card
