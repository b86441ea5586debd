"""YAML recipes: a model, its transforms, fine-tuning and evaluation settings, run end to end.

A recipe names a model and the transforms that harden it; ``harden run`` (:func:`run_recipe`) then
runs apply -> finetune -> evaluate for the baseline (no transform) and for each hardened model alike,
from the same starting weights, and writes both models, their reports and a comparison table.
Recipe files are checked against a schema before anything runs: an unknown key or a wrong type is a
one-line error naming the key and its line (PyYAML's node marks give the lines). Example::

    name: quickstart
    model: {spec: timm:resnet10t, num_classes: 10, input_size: 32}
    data: {train: sample, test: sample}
    transforms: [activation:name=silu]
    finetune: {method: fgsm-rs, eps: 8/255, epochs: 3, lr: 0.05}
    evaluate: {attacks: [pgd], n: 200}
"""

from __future__ import annotations

import copy
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harden import tracking
from harden.errors import HardenError, UsageError, close_matches
from harden.runtime.atomic import atomic_path
from harden.runtime.events import ArtifactWritten, Events, Record
from harden.runtime.session import session
from harden.runtime.store import Store, as_json, checkpoint_path_for, differences
from harden.schemas.evaluate import EvaluateConfig
from harden.schemas.fields import parse_number, yaml_keys
from harden.schemas.finetune import FinetuneConfig, make_config
from harden.tracking import Prefixed

# ------------------------------------------------------------------------------------------ schema


@dataclass(frozen=True)
class Key:
    """One recipe key: its kind (str, int, number, bool, list[str], list[number], map, variants)."""

    kind: str
    required: bool = False
    choices: tuple[str, ...] = ()
    children: dict[str, Key] | None = None
    help: str = ""


def _schema_keys(schema: type) -> dict[str, Key]:
    """The recipe keys of a command's schema (its fields marked as YAML keys), in the declared order."""
    return {name: Key(s.kind, choices=s.choices, help=s.help) for name, s in yaml_keys(schema).items()}


def _attack_names() -> tuple[str, ...]:
    from harden.attacks import ATTACKS

    return tuple(ATTACKS)


SCHEMA: dict[str, Key] = {
    "name": Key("str", help="name of the run (default: the file name)"),
    "description": Key("str"),
    "model": Key("map", required=True, children={
        "spec": Key("str", required=True, help="model spec: timm name, tv:NAME, cifar:NAME, package.module:factory"),
        "num_classes": Key("int"),
        "input_size": Key("int"),
        "weights": Key("str", help="state dict file for the base model (relative to the recipe or the cwd)"),
        "pretrained": Key("bool"),
        "mean": Key("list[number]"),
        "std": Key("list[number]"),
        "seed": Key("int", help="seed of the base model's random initialisation (default 0), so that runs and "
                                "resumed runs start from the same weights"),
    }),
    "data": Key("map", required=True, children={
        "train": Key("str", required=True, help="data spec for fine-tuning (its train split)"),
        "test": Key("str", help="data spec for evaluation (its test split; default: the train spec)"),
        "download": Key("bool"),
    }),
    "pretrain": Key("map", children=_schema_keys(FinetuneConfig),
                    help="optional clean training of the base model first (method defaults to clean)"),
    "transforms": Key("list[str]", help="the hardened model's transforms, in order"),
    "variants": Key("variants", help="several hardened models: name -> list of transforms"),
    "baseline": Key("bool", help="also fine-tune and evaluate the model without transforms (default true)"),
    "finetune": Key("map", children=_schema_keys(FinetuneConfig)),
    "evaluate": Key("map", children={
        "attacks": Key("list[str]", choices=_attack_names(), help="attacks to run, each a column of the table"),
        **_schema_keys(EvaluateConfig),
        "start": Key("bool", help="also evaluate the starting model (default true)"),
    }),  # random_subset defaults to true in a recipe
    "tracking": Key("str", help="mlflow or mlflow:URI: record the run (settings, metrics, files) in MLflow"),
}

_KIND_TEXT = {"str": "a string", "int": "an integer", "number": "a number (e.g. 0.1 or 8/255)",
              "bool": "true or false", "list[str]": "a list of strings", "list[number]": "a list of numbers",
              "map": "a mapping of keys", "variants": "a mapping of name: [transforms]"}
_PLAIN_TAGS = frozenset(f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "seq", "map"))
_VARIANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class Recipe:
    """A checked recipe: plain values, the file it came from and where each key was set (for errors)."""

    values: dict[str, Any]
    path: Path
    where: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.values.get("name") or self.path.stem)

    def location(self, dotted: str) -> str:
        """``file, line N`` (or ``--set KEY``) of a key, falling back to its closest set parent."""
        parts = dotted.split(".")
        while parts:
            loc = self.where.get(".".join(parts))
            if loc:
                return loc
            parts.pop()
        return str(self.path)


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, (list, dict)):
        return "a list" if isinstance(value, list) else "a mapping"
    return repr(value) if value is not None else "nothing"


class _Checker:
    """Walks PyYAML nodes against the schema, building plain values and recording each key's line."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.loader = yaml.SafeLoader("")
        self.where: dict[str, str] = {}

    def at(self, node: yaml.Node) -> str:
        return f"{self.source}, line {node.start_mark.line + 1}"

    def fail(self, node: yaml.Node, message: str) -> UsageError:
        return UsageError(f"{self.at(node)}: {message}")

    def scalar(self, node: yaml.Node) -> Any:
        self.plain(node)
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise self.fail(node, f"not a plain value ({problem})") from None

    def plain(self, node: yaml.Node) -> None:
        """Refuse YAML tags that would build objects: a recipe holds plain values only."""
        if node.tag not in _PLAIN_TAGS:
            raise self.fail(node, f"the tag '{node.tag}' is not allowed; a recipe holds plain values only "
                                  "(strings, numbers, booleans, lists, mappings)")

    def check(self, node: yaml.Node, key: Key, dotted: str) -> Any:
        self.plain(node)
        self.where.setdefault(dotted, self.at(node))
        label = dotted or "the recipe"
        if key.kind in ("map", "variants"):
            if not isinstance(node, yaml.MappingNode):
                raise self.fail(node, f"{label} must be {_KIND_TEXT[key.kind]}, got {_describe(self.scalar(node))}")
            return self.mapping(node, key, dotted)
        if key.kind.startswith("list["):
            item_kind = key.kind[5:-1]
            if isinstance(node, yaml.ScalarNode) and item_kind == "str" and self.scalar(node) is not None:
                items = [node]  # a single string stands for a one-element list
            elif not isinstance(node, yaml.SequenceNode):
                raise self.fail(node, f"{label} must be {_KIND_TEXT[key.kind]}, got {_describe(self.scalar(node))}")
            else:
                items = node.value
            out = []
            for i, item in enumerate(items):
                self.where[f"{dotted}[{i}]"] = self.at(item)
                out.append(self.leaf(item, Key(item_kind, choices=key.choices), f"{dotted}[{i}]"))
            return out
        return self.leaf(node, key, dotted)

    def leaf(self, node: yaml.Node, key: Key, dotted: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, f"{dotted} must be {_KIND_TEXT[key.kind]}, got a "
                                  f"{'list' if isinstance(node, yaml.SequenceNode) else 'mapping'}")
        value = self.scalar(node)
        kind = key.kind
        ok = True
        if kind == "str":
            ok = isinstance(value, str)
            if not ok and isinstance(value, (int, float)) and not isinstance(value, bool):
                raise self.fail(node, f"{dotted} must be a string, got {value!r}; quote it: \"{node.value}\"")
        elif kind == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif kind == "bool":
            ok = isinstance(value, bool)
        elif kind == "number":
            if isinstance(value, str):
                try:
                    value = parse_number(value)
                except ValueError:
                    ok = False
            else:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
                value = float(value) if ok else value
        if not ok:
            raise self.fail(node, f"{dotted} must be {_KIND_TEXT[kind]}, got {_describe(value)}")
        if key.choices and value not in key.choices:
            raise self.fail(node, f"{dotted} must be one of {', '.join(key.choices)}, got '{value}'"
                                  f"{close_matches(str(value), key.choices)}")
        return value

    def mapping(self, node: yaml.MappingNode, key: Key, dotted: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        seen: dict[str, yaml.Node] = {}
        for k_node, v_node in node.value:
            name = self.scalar(k_node)
            if not isinstance(name, str):
                raise self.fail(k_node, f"keys must be names, got {_describe(name)}")
            if name in seen:
                raise self.fail(k_node, f"'{name}' is given twice in {dotted or 'the recipe'} "
                                        f"(first at line {seen[name].start_mark.line + 1})")
            seen[name] = k_node
            child_dotted = f"{dotted}.{name}" if dotted else name
            if key.kind == "variants":
                if not _VARIANT_NAME.match(name) or name in ("baseline", "start"):
                    raise self.fail(k_node, f"variant name '{name}' must be a plain file name other than "
                                            "baseline and start (letters, digits, _ . -)")
                self.where[child_dotted] = self.at(k_node)
                out[name] = self.check(v_node, Key("list[str]"), child_dotted)
                continue
            children = key.children or {}
            if name not in children:
                raise self.fail(k_node, f"unknown key '{name}' in {dotted or 'the recipe'}"
                                        f"{close_matches(name, children)} (known: {', '.join(children)})")
            self.where[child_dotted] = self.at(k_node)
            if isinstance(v_node, yaml.ScalarNode) and self.scalar(v_node) is None:
                continue  # `key:` or `key: null` means the default
            out[name] = self.check(v_node, children[name], child_dotted)
        for name, child in (key.children or {}).items():
            if child.required and name not in out:
                raise self.fail(node, f"{dotted or 'the recipe'} needs '{name}'"
                                      + (f" ({child.help})" if child.help else ""))
        return out


def _schema_key(dotted: str) -> Key:
    key = Key("map", children=SCHEMA)
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if key.kind == "variants" and i == len(parts) - 1:
            return Key("list[str]")
        children = key.children or {}
        if part not in children:
            where = ".".join(parts[:i]) or "the recipe"
            raise UsageError(f"--set {dotted}: unknown key '{part}' in {where}{close_matches(part, children)}")
        key = children[part]
    return key


def _apply_override(values: dict[str, Any], where: dict[str, str], dotted: str, text: str) -> None:
    key = _schema_key(dotted)
    checker = _Checker(f"--set {dotted}")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader) if text.strip() else None
    except yaml.YAMLError as exc:
        raise UsageError(f"--set {dotted}: '{text}' is not a YAML value ({str(exc).splitlines()[0]})") from None
    parts = dotted.split(".")
    parent = values
    for part in parts[:-1]:
        parent = parent.setdefault(part, {})
        if not isinstance(parent, dict):
            raise UsageError(f"--set {dotted}: '{part}' is not a mapping")
    if node is None or (isinstance(node, yaml.ScalarNode) and checker.scalar(node) is None):
        parent.pop(parts[-1], None)
        return
    try:
        parent[parts[-1]] = checker.check(node, key, dotted)
    except UsageError as exc:
        raise UsageError(str(exc).replace(f"--set {dotted}, line 1: ", f"--set {dotted}: ")) from None
    for k in checker.where:
        where[k] = f"--set {dotted}"
    where[dotted] = f"--set {dotted}"


def parse_recipe(text: str, *, source: str = "<recipe>", overrides: Sequence[tuple[str, str]] = ()) -> Recipe:
    """Check recipe YAML ``text`` (and ``--set`` overrides) and return the :class:`Recipe`."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f", line {mark.line + 1}" if mark is not None else ""
        raise UsageError(f"{source}{line}: not valid YAML ({exc.problem or exc.context})") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{source}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if root is None:
        raise UsageError(f"{source} is empty; a recipe needs at least model, data and transforms")
    checker = _Checker(source)
    values = checker.check(root, Key("map", children=SCHEMA), "")
    checker.where.pop("", None)
    recipe = Recipe(values, Path(source), checker.where)
    for dotted, value in overrides:
        _apply_override(recipe.values, recipe.where, dotted, value)
    _check_semantics(recipe)
    return recipe


def load_recipe(path: str | os.PathLike[str], *, overrides: Sequence[tuple[str, str]] = ()) -> Recipe:
    """Read and check a recipe file; ``overrides`` are ``(dotted.key, yaml value)`` pairs (``--set``)."""
    p = Path(path)
    if not p.is_file():
        shipped = Path(__file__).resolve().parent.parent / "recipes" / p.name
        hint = f"; did you mean {shipped}?" if shipped.is_file() and shipped != p.resolve() else ""
        raise UsageError(f"recipe '{path}' does not exist{hint}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"recipe '{path}' could not be read ({exc})") from None
    return parse_recipe(text, source=str(path), overrides=overrides)


def _option_key(message: str, section: dict[str, Any]) -> str | None:
    for name in section:
        if f"--{name.replace('_', '-')} " in message + " " or f"{name} " in message:
            return name
    return None


def _check_semantics(recipe: Recipe) -> None:
    """Checks across keys and value ranges, each error pointing at the key's line."""
    from harden.transforms import parse_transform

    v = recipe.values
    if "transforms" in v and "variants" in v:
        raise UsageError(f"{recipe.location('variants')}: give either transforms or variants, not both")
    if "transforms" not in v and "variants" not in v:
        raise UsageError(f"{recipe.path}: the recipe needs transforms (the hardened model) or variants")
    if "variants" in v and not v["variants"]:
        raise UsageError(f"{recipe.location('variants')}: variants is empty")
    for section in ("pretrain", "finetune"):
        values = dict(v.get(section) or {})
        if section == "pretrain":
            values.setdefault("method", "clean")
        try:
            make_config(**values)
        except UsageError as exc:
            name = _option_key(str(exc), values)
            where = recipe.location(f"{section}.{name}" if name else section)
            raise UsageError(f"{where}: {section}: {exc}") from None
    lists = {"transforms": v.get("transforms", [])}
    lists.update({f"variants.{k}": t for k, t in (v.get("variants") or {}).items()})
    for dotted, transforms in lists.items():
        for i, spec in enumerate(transforms):
            try:
                parse_transform(spec)
            except UsageError as exc:
                raise UsageError(f"{recipe.location(f'{dotted}[{i}]')}: {exc}") from None
    ev = v.get("evaluate") or {}
    if ev:
        from harden.attacks import takes_steps
        from harden.evaluation import plan_attack

        eps = ev.get("eps", (v.get("finetune") or {}).get("eps", FinetuneConfig.eps))
        for i, attack in enumerate(ev.get("attacks", ["pgd"])):
            try:
                plan_attack(attack, eps=eps, norm=ev.get("norm", "Linf"), fast=bool(ev.get("fast")) and
                            attack == "autoattack", steps=ev.get("steps") if takes_steps(attack) else None)
            except UsageError as exc:
                raise UsageError(f"{recipe.location(f'evaluate.attacks[{i}]')}: {exc}") from None
        for name in ("n", "batch_size", "steps"):
            if name in ev and ev[name] <= 0:
                raise UsageError(f"{recipe.location(f'evaluate.{name}')}: evaluate.{name} must be positive")


# ------------------------------------------------------------------------------------------- run


def _weights_path(recipe: Recipe, weights: str | None) -> str | None:
    if weights is None:
        return None
    p = Path(weights)
    if not p.is_absolute() and not p.exists() and (recipe.path.parent / p).exists():
        return str(recipe.path.parent / p)
    return weights


def _attack_label(report: dict[str, Any]) -> str:
    from harden.attacks import attack_label

    return attack_label(report)


def _fmt_pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _human(n: float) -> str:
    from harden.summary import human

    return human(n)


def comparison_markdown(result: dict[str, Any]) -> str:
    """The comparison table (baseline against hardened) as markdown, with the notes that qualify it."""
    rows = result["rows"]
    attacks = result["attack_columns"]
    head = ["model", "transforms", "params", "MACs", "fine-tuning", "clean %"] + [f"{a} %" for a in attacks]
    lines = [f"### {result['recipe']}: baseline vs hardened", "",
             "| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 5 + ["---:"] * (1 + len(attacks))) + "|"]
    for r in rows:
        cells = [r["model"], ", ".join(r["transforms"]) or "none", _human(r["params"]),
                 _human(r["macs"]) if r.get("macs") is not None else "-", r["finetune_text"],
                 _fmt_pct(r["clean_acc"])] + [_fmt_pct(r["robust"].get(a)) for a in attacks]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"- {note}" for note in result["notes"]]
    return "\n".join(lines) + "\n"


def _uncertainty_notes(evaluations: dict[str, list[dict[str, Any]]]) -> list[str]:
    """How far the table's accuracies can be trusted: interval widths, and each variant paired with the baseline."""
    from harden.stats import compare_reports

    reports = [r for rs in evaluations.values() for r in rs]
    widths = [(ci[1] - ci[0]) / 2 for r in reports for ci in (r.get("clean_ci95"), r.get("robust_ci95")) if ci]
    notes = []
    if widths:
        notes.append(f"uncertainty: the 95% interval of each accuracy (Wilson, n={reports[0]['n']}) reaches up to "
                     f"±{max(widths):.1f} points. These intervals and the paired p-values below cover the choice "
                     "of test images only, not training noise: another training seed gives another model")
    for name, rs in evaluations.items():
        if name == "baseline" or "baseline" not in evaluations:
            continue
        for base_report, report in zip(evaluations["baseline"], rs):
            c = compare_reports(base_report, report)
            rob, cln = c["robust"], c["clean"]
            notes.append(
                f"{name} vs baseline, {_attack_label(report)}: robust {rob['difference']:+.1f} points, exact McNemar "
                f"p = {rob['p_value']:.2g} ({rob['only_b']} images only {name} withstands, {rob['only_a']} only the "
                f"baseline); clean {cln['difference']:+.1f} points, p = {cln['p_value']:.2g}")
    return notes


def _finetune_text(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "none"
    if entry["method"] == "clean":
        return f"{entry['epochs_run']} ep (kept {entry['kept_epoch']})"
    eps = f"{entry['eps'] * 255:.3g}/255" if entry.get("norm", "Linf") == "Linf" else f"{entry['eps']:g}"
    steps = f"-{entry['steps']}" if entry["method"] in ("pgd", "trades", "mart") else ""
    extras = (f"+awp {entry['awp']['gamma']:g}" if entry.get("awp") else "") + (
        f"+extra {entry['extra_data']['fraction']:g}" if entry.get("extra_data") else "")
    return f"{entry['method']}{steps}{extras} eps {eps}, {entry['epochs_run']} ep (kept {entry['kept_epoch']})"


class RunState:
    """Which stages of a ``harden run`` have finished, kept in ``OUT/run-state.json``.

    A fresh run starts an empty state; ``resume=True`` reads it back, refuses a folder that holds a
    run of a different recipe, and lets finished stages be skipped. Stages are marked only after
    their outputs are written, so a stage listed here is complete.
    """

    FILE = "run-state.json"

    def __init__(self, out: Path, values: dict[str, Any], *, resume: bool, writer: bool) -> None:
        self.path = out / self.FILE
        self.store = Store(self.path, indent=2,
                           unreadable="'{path}' is damaged ({reason}); run without --resume to start over")
        self.values = as_json(values)
        self.writer = writer
        self.done: dict[str, dict[str, Any]] = {}
        if resume:
            if not self.path.is_file():
                raise UsageError(f"nothing to resume in '{out}': it holds no {self.FILE} from an earlier "
                                 "`harden run`; run without --resume")
            saved = self.store.load()
            try:
                old, done = saved["recipe"], dict(saved["done"])  # type: ignore[index]
            except (ValueError, KeyError, TypeError) as exc:
                raise self.store.damaged(exc) from None
            diffs = [key or "(the whole recipe)" for key, _, _ in differences(old, self.values)]
            if diffs:
                raise UsageError(f"'{out}' holds a run of a different recipe (it differs at {', '.join(diffs[:5])}); "
                                 "resume with the same recipe and --set values, or choose another --out")
            self.done = done
        elif writer:
            out.mkdir(parents=True, exist_ok=True)
            self._write()

    def finished(self, stage: str) -> dict[str, Any] | None:
        """What was recorded when ``stage`` finished, or None if it has not."""
        return self.done.get(stage)

    def mark(self, stage: str, **info: Any) -> None:
        """Record that ``stage`` finished (after its outputs are written)."""
        self.done[stage] = info
        if self.writer:
            self._write()

    def _write(self) -> None:
        self.store.save({"recipe": self.values, "done": self.done})


def run_recipe(recipe: Recipe, *, out_dir: str | os.PathLike[str] | None = None, progress: bool = True,
               echo: Callable[[str], Any] | None = None, resume: bool = False, tracker: Any = None) -> dict[str, Any]:
    """apply -> finetune -> evaluate for the baseline and the hardened model(s); write models, reports, table.

    Returns the comparison (``rows``, ``notes``, ``markdown``, ``out_dir``). Under torchrun every rank
    trains and evaluates its share; only rank 0 writes. ``resume=True`` continues an interrupted run
    in the same ``out_dir``: finished stages are read back, an interrupted fine-tuning continues from
    its checkpoint and an interrupted evaluation from its saved batches. ``tracker`` (default: the
    recipe's ``tracking`` key) records one tracking run: the recipe as parameters, each stage's metrics
    under its name (``baseline.val_robust``, ``hardened.pgd.robust_acc``, ...) and the output files.
    """
    spec = tracker if tracker is not None else recipe.values.get("tracking")
    tracking.check_track(spec if isinstance(spec, str) else None)
    with tracking.Session(spec, run_name=recipe.name) as sink:
        events = Events(tracking.TrackerSink(sink))
        events.emit(Record("settings", recipe.values))
        result = _run_recipe(recipe, out_dir=out_dir, progress=progress, echo=echo, resume=resume, sink=sink)
        out = Path(result["out_dir"])
        for name in ("comparison.md", "comparison.json", "recipe.yaml"):
            events.emit(ArtifactWritten(out / name))
    return result


def _run_recipe(recipe: Recipe, *, out_dir: str | os.PathLike[str] | None, progress: bool,
                echo: Callable[[str], Any] | None, resume: bool, sink: Any) -> dict[str, Any]:
    """:func:`run_recipe`'s stages, reporting to the tracker ``sink``."""
    import torch

    import harden
    from harden.data import load_dataset
    from harden.evaluation import evaluate
    from harden.summary import count_macs
    from harden.training import _resolve_data, finetune

    say = echo or (lambda _s: None)
    v = copy.deepcopy(recipe.values)
    name = recipe.name
    out = Path(out_dir) if out_dir is not None else Path("runs") / name
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out '{out}' exists and is not a folder")
    m = v["model"]
    data = v["data"]
    ft = dict(v.get("finetune") or {})
    if ft.get("pseudo_label"):  # a teacher file beside the recipe, as for model.weights
        ft["pseudo_label"] = _weights_path(recipe, ft["pseudo_label"])
    pre = v.get("pretrain")
    ev = dict(v.get("evaluate") or {})
    attacks = list(ev.get("attacks", ["pgd"]))
    eps = ev.get("eps", ft.get("eps", FinetuneConfig.eps))
    variants: list[tuple[str, list[str]]] = [("baseline", [])] if v.get("baseline", True) else []
    variants += list(v["variants"].items()) if "variants" in v else [("hardened", list(v["transforms"]))]

    with session("auto") as dist:
        main = dist.is_main
        t_run = time.perf_counter()
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's generator
            torch.manual_seed(m.get("seed", 0))
            base = harden.load_model(m["spec"], num_classes=m.get("num_classes"),
                                     pretrained=bool(m.get("pretrained")),
                                     weights=_weights_path(recipe, m.get("weights")), input_size=m.get("input_size"),
                                     mean=m.get("mean"), std=m.get("std"))
        size = base.input_size[-1]
        train_ds = _resolve_data(load_dataset(data["train"], "train", download=bool(data.get("download")),
                                              image_size=size), base, False)
        test_ds = load_dataset(data.get("test", data["train"]), "test", download=bool(data.get("download")),
                               image_size=size)
        if test_ds.num_classes != base.num_classes:
            raise UsageError(f"the test data '{test_ds.spec}' has {test_ds.num_classes} classes but the model has "
                             f"{base.num_classes} outputs")
        for vname, transforms in variants:  # every transform must apply before any training starts
            if transforms:
                try:
                    harden.apply(base, transforms)
                except HardenError as exc:
                    key = "transforms" if vname == "hardened" else f"variants.{vname}"
                    raise type(exc)(f"{recipe.location(key)}: {exc}") from None
        state = RunState(out, v, resume=resume, writer=main)
        if main:
            with atomic_path(out / "recipe.yaml") as tmp:
                tmp.write_text(f"# resolved from {recipe.path}\n" + yaml.safe_dump(v, sort_keys=False))

        def run_eval(model: Any, label: str, file: Path | None) -> list[dict[str, Any]]:
            reports = []
            for attack in attacks:
                stage, path = f"evaluate:{label}:{attack}", out / f"{label}.eval-{attack}.json"
                if state.finished(stage) is not None:
                    say(f"[{label}] {attack}: finished earlier, read from {path.name}")
                    reports.append(json.loads(path.read_text()))
                    continue
                say(f"[{label}] evaluating: {attack} at eps {eps * 255:.3g}/255 on {ev.get('n', 1000)} test images")
                reports.append(evaluate(
                    model, test_ds, attack=attack, eps=eps, norm=ev.get("norm", "Linf"), n=ev.get("n", 1000),
                    seed=ev.get("seed", 0), fast=bool(ev.get("fast")) and attack == "autoattack",
                    steps=ev.get("steps") if attack in ("pgd", "cw") else None,
                    batch_size=ev.get("batch_size", "auto"), random_subset=bool(ev.get("random_subset", True)),
                    progress=progress, into=file, report=path, resume=resume,
                    skip_bad_images=bool(ev.get("skip_bad_images")), tracker=Prefixed(sink, f"{label}.{attack}.")))
                state.mark(stage)
            if main:
                with atomic_path(out / f"{label}.report.json") as tmp:
                    tmp.write_text(json.dumps(reports, indent=2) + "\n")
            return reports

        def run_finetune(model: Any, label: str, **settings: Any) -> tuple[Any, float]:
            stage, path = f"finetune:{label}", out / f"{label}.safetensors"
            done = state.finished(stage)
            if done is not None:
                say(f"[{label}] fine-tuning finished earlier, read from {path.name}")
                return harden.load(path, trust_code=True), done["seconds"]  # code the recipe runs anyway
            t0 = time.perf_counter()
            again = resume and checkpoint_path_for(path).exists()
            if again:
                say(f"[{label}] continuing the interrupted fine-tuning from {checkpoint_path_for(path).name}")
            tuned = finetune(model, train_ds, output=path, force=True, resume=again, progress=progress,
                             tracker=Prefixed(sink, f"{label}."), **settings)
            seconds = round(time.perf_counter() - t0, 1)
            state.mark(stage, seconds=seconds)
            return tuned, seconds

        def row(label: str, model: Any, transforms: list[str], reports: list[dict[str, Any]],
                seconds: float | None) -> dict[str, Any]:
            finetune_entry = model.provenance.finetune if label != "start" or pre else None
            entry = finetune_entry.to_dict() if finetune_entry is not None else None
            if entry:
                text = ("clean pre-training: " if label == "start" else "") + _finetune_text(entry)
            else:
                text = "none (as loaded)"
            try:
                macs = count_macs(model, model.input_size)
            except Exception:  # a model the FLOP counter cannot run: leave the column empty
                macs = None
            return {
                "model": label, "transforms": transforms, "params": sum(p.numel() for p in model.parameters()),
                "macs": macs,
                "finetune": entry and {k: x for k, x in entry.items() if k not in ("history", "previous")},
                "finetune_text": text,
                "clean_acc": reports[0]["clean_acc"] if reports else None,
                "robust": {_attack_label(r): r["robust_acc"] for r in reports},
                "clean_ci95": reports[0].get("clean_ci95") if reports else None,
                "robust_ci95": {_attack_label(r): r.get("robust_ci95") for r in reports},
                "file": f"{label}.safetensors" if label != "start" or pre else None,
                "finetune_seconds": seconds,
            }

        rows = []
        evaluations: dict[str, list[dict[str, Any]]] = {}  # variant -> its reports, for the paired tests
        start = base
        if pre:
            say(f"[start] clean pre-training of {m['spec']} on {data['train']}")
            start, pre_seconds = run_finetune(base, "start", **{"method": "clean", **pre})
        if ev.get("start", True):
            reports = run_eval(start, "start", out / "start.safetensors" if pre else None)
            rows.append(row("start", start, [], reports, pre_seconds if pre else None))
        for vname, transforms in variants:
            model = harden.apply(start, transforms) if transforms else start
            say(f"[{vname}] fine-tuning" + (f" with {', '.join(transforms)}" if transforms else " (no transform)"))
            tuned, seconds = run_finetune(model, vname, **ft)
            reports = run_eval(tuned, vname, out / f"{vname}.safetensors")
            rows.append(row(vname, tuned, transforms, reports, seconds))
            evaluations[vname] = reports
        labels: list[str] = []
        for r in rows:
            labels += [a for a in r["robust"] if a not in labels]
        n_eval = ev.get("n", 1000)
        notes = [
            f"data: fine-tuned on the train split of `{data['train']}`, evaluated on "
            + (f"a random subset (seed {ev.get('seed', 0)}) of {n_eval}" if ev.get("random_subset", True)
               else f"the first {n_eval}")
            + f" images of the test split of `{test_ds.spec}`; accuracies in %, eps {eps * 255:.3g}/255 "
            f"({ev.get('norm', 'Linf')})",
            "baseline and hardened models start from the same weights and get the same fine-tuning",
        ]
        if pre:
            n_pre = pre.get("epochs", FinetuneConfig.epochs)
            notes.append(f"start: `{m['spec']}` trained from {'its given weights' if m.get('weights') else 'scratch'} "
                         f"without attacks by the recipe's pretrain stage ({n_pre} epoch{'s' if n_pre != 1 else ''}), "
                         "then used as the starting point of every row below it")
        else:
            how = ("weights " + Path(m["weights"]).name if m.get("weights")
                   else "pretrained weights" if m.get("pretrained") else "random initialisation")
            notes.append(f"start: `{m['spec']}` as loaded ({how})")
        if recipe.values.get("description"):
            notes.append(str(recipe.values["description"]).strip())
        device = (rows[-1].get("finetune") or {}).get("device", "cpu") if rows else "cpu"
        notes += _uncertainty_notes(evaluations)
        notes.append(f"total time {time.perf_counter() - t_run:.0f}s on {device}")
        result = {"recipe": name, "source": str(recipe.path), "out_dir": str(out), "attack_columns": labels,
                  "rows": rows, "notes": notes}
        result["markdown"] = comparison_markdown(result)
        if main:
            with atomic_path(out / "comparison.json") as tmp:
                tmp.write_text(json.dumps({k: x for k, x in result.items() if k != "markdown"}, indent=2) + "\n")
            with atomic_path(out / "comparison.md") as tmp:
                tmp.write_text(result["markdown"])
        dist.barrier()
        return result
