"""The recipe file's keys (:data:`SCHEMA`), the checked :class:`Recipe`, and the checker that walks YAML nodes.

Each key has a kind (str, int, number, bool, list[str], list[number], map, variants); the checker
builds plain values from PyYAML's nodes and records the line each key was set on, so that an unknown
key or a wrong type is a one-line error naming the key and its line.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harden.attacks import list_attacks
from harden.errors import UsageError, close_matches
from harden.schemas.evaluate import EvaluateConfig
from harden.schemas.fields import parse_number, yaml_keys
from harden.schemas.finetune import CROPS, FinetuneConfig, resize_text
from harden.schemas.model import ModelSpec
from harden.shapes import parse_input_size


@dataclass(frozen=True)
class Key:
    """One recipe key: its kind (str, int, number, bool, list[str], list[number], map, variants)."""

    kind: str
    required: bool = False
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] = ()  # a callable is asked at check time
    children: dict[str, Key] | None = None
    help: str = ""

    def allowed(self) -> tuple[str, ...]:
        """The values this key accepts now (empty: any)."""
        return self.choices() if callable(self.choices) else self.choices


def _attack_names() -> tuple[str, ...]:
    """The registered attacks, plugins' included, when a recipe is checked."""
    return tuple(list_attacks())


def schema_keys(schema: type) -> dict[str, Key]:
    """The recipe keys of a command's schema (its fields marked as YAML keys), in the declared order."""
    return {name: Key(s.kind, required=s.required, choices=s.registry.names if s.registry is not None else s.choices,
                      help=s.help)
            for name, s in yaml_keys(schema).items()}


SCHEMA: dict[str, Key] = {
    "name": Key("str", help="name of the run (default: the file name)"),
    "description": Key("str"),
    "model": Key("map", required=True, children=schema_keys(ModelSpec)),
    "data": Key("map", required=True, children={
        "train": Key("str", required=True, help="data spec for fine-tuning (its train split); a relative path is "
                                                "read from the current folder, else beside the recipe"),
        "test": Key("str", help="data spec for evaluation (its test split; default: the train spec)"),
        "train_split": Key("str", help="the split fine-tuning reads (default train)"),
        "test_split": Key("str", help="the split evaluation reads (default test)"),
        "resize": Key("size", help="N or HxW: resize images before the centre crop to the model's input"),
        "crop": Key("str", choices=CROPS, help="center (default), or none: resize straight to the model's input"),
        "download": Key("bool"),
    }),
    "pretrain": Key("map", children=schema_keys(FinetuneConfig),
                    help="optional clean training of the base model first (method defaults to clean)"),
    "transforms": Key("list[str]", help="the hardened model's transforms, in order"),
    "variants": Key("variants", help="several hardened models: name -> list of transforms"),
    "baseline": Key("bool", help="also fine-tune and evaluate the model without transforms (default true)"),
    "finetune": Key("map", children=schema_keys(FinetuneConfig)),
    "evaluate": Key("map", children={
        "attacks": Key("list[str]", choices=_attack_names, help="attacks to run, each a column of the table"),
        **schema_keys(EvaluateConfig),
        "start": Key("bool", help="also evaluate the starting model (default true)"),
    }),  # random_subset defaults to true in a recipe
    "tracking": Key("str", help="mlflow or mlflow:URI: record the run (settings, metrics, files) in MLflow"),
}

_KIND_TEXT = {"str": "a string", "int": "an integer", "number": "a number (e.g. 0.1 or 8/255)",
              "bool": "true or false", "list[str]": "a list of strings", "list[number]": "a list of numbers",
              "map": "a mapping of keys", "variants": "a mapping of name: [transforms]",
              "size": "N or HxW (e.g. 36 or 72x64)", "input_size": "N, HxW or CxHxW (e.g. 32, 64x48, 1x28x28)",
              "kwargs": "a mapping of argument names to plain values"}
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

    def data_spec(self, spec: str) -> str:
        """A data spec of the recipe with its path read as :meth:`local_path` reads files (``sample`` as it is)."""
        kind, sep, root = spec.partition(":")
        return f"{kind}:{self.local_path(root)}" if sep and root else spec

    def local_path(self, name: str | None) -> str | None:
        """A file the recipe names (weights, a teacher): beside the recipe when it is there and not in the cwd."""
        if name is None:
            return None
        p = Path(name)
        if not p.is_absolute() and not p.exists() and (self.path.parent / p).exists():
            return str(self.path.parent / p)
        return name


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, (list, dict)):
        return "a list" if isinstance(value, list) else "a mapping"
    return repr(value) if value is not None else "nothing"


class NodeChecker:
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
        if key.kind == "kwargs":
            return self.arguments(node, dotted)
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

    def arguments(self, node: yaml.Node, dotted: str) -> dict[str, Any]:
        """A mapping of constructor argument names to plain values (numbers, strings, booleans, lists of them)."""
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{dotted} must be {_KIND_TEXT['kwargs']}, got {_describe(self.scalar(node))}")
        out: dict[str, Any] = {}
        for k_node, v_node in node.value:
            self.plain(k_node)
            name = self.scalar(k_node)
            if not isinstance(name, str) or not name.isidentifier():
                raise self.fail(k_node, f"{dotted}: argument names are Python identifiers, got {name!r}")
            items = v_node.value if isinstance(v_node, yaml.SequenceNode) else [v_node]
            values = []
            for item in items:
                self.plain(item)
                if not isinstance(item, yaml.ScalarNode):
                    raise self.fail(item, f"{dotted}.{name} must be a plain value or a list of them")
                values.append(self.scalar(item))
            out[name] = values if isinstance(v_node, yaml.SequenceNode) else values[0]
        return out

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
        elif kind == "input_size":
            try:
                parse_input_size(value)
            except UsageError as exc:
                raise self.fail(node, f"{dotted}: {exc}") from None
        elif kind == "size":
            try:
                value = resize_text(value, dotted) if isinstance(value, (int, str)) else value
                ok = isinstance(value, str)
            except UsageError as exc:
                raise self.fail(node, str(exc)) from None
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
        allowed = key.allowed()
        if allowed and value not in allowed:
            raise self.fail(node, f"{dotted} must be one of {', '.join(allowed)}, got '{value}'"
                                  f"{close_matches(str(value), allowed)}")
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

