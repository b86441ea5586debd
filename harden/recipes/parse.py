"""Reading a recipe: parse and check the YAML, apply ``--set`` overrides, then check across keys.

:func:`load_recipe` reads a file, :func:`parse_recipe` a text; both return a checked
:class:`~harden.recipes.schema.Recipe` or raise one ``UsageError`` that names the key and its line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from harden.attacks import takes_steps
from harden.data import check_spec
from harden.errors import UsageError, close_matches
from harden.evaluation import plan_attack
from harden.recipes.run_plan import recipe_evaluation
from harden.recipes.schema import SCHEMA, Key, NodeChecker, Recipe
from harden.schemas.finetune import make_config
from harden.transforms import parse_transform

# the recipes shipped with harden, named in the error for a recipe file that does not exist
SHIPPED_RECIPES = Path(__file__).resolve().parents[2] / "recipes"


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
    checker = NodeChecker(f"--set {dotted}")
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


def parse_recipe(text: str, *, source: str = "<recipe>", overrides: Sequence[tuple[str, str]] = (),
                 check_data: bool = True) -> Recipe:
    """Check recipe YAML ``text`` (and ``--set`` overrides) and return the :class:`Recipe`.

    ``check_data``: also check that the data the recipe names is there (its root, its splits).
    """
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
    checker = NodeChecker(source)
    values = checker.check(root, Key("map", children=SCHEMA), "")
    checker.where.pop("", None)
    recipe = Recipe(values, Path(source), checker.where)
    for dotted, value in overrides:
        _apply_override(recipe.values, recipe.where, dotted, value)
    _check_semantics(recipe)
    if check_data:
        check_data_paths(recipe)
    return recipe


def load_recipe(path: str | os.PathLike[str], *, overrides: Sequence[tuple[str, str]] = (),
                check_data: bool = True) -> Recipe:
    """Read and check a recipe file; ``overrides`` are ``(dotted.key, yaml value)`` pairs (``--set``).

    Relative data paths are read from the current folder, else beside the recipe; ``check_data``: refuse a
    recipe whose data is not there.
    """
    p = Path(path)
    if not p.is_file():
        shipped = SHIPPED_RECIPES / p.name
        hint = f"; did you mean {shipped}?" if shipped.is_file() and shipped != p.resolve() else ""
        raise UsageError(f"recipe '{path}' does not exist{hint}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"recipe '{path}' could not be read ({exc})") from None
    return parse_recipe(text, source=str(path), overrides=overrides, check_data=check_data)


def check_data_paths(recipe: Recipe) -> None:
    """Refuse (one line, naming the key) a data spec whose root is missing or that has no such split."""
    data = recipe.values.get("data") or {}
    download = bool(data.get("download"))
    for key in ("train", "test"):
        spec = data.get(key, data.get("train")) if key == "test" else data.get(key)
        if not isinstance(spec, str):
            continue
        split = data.get(f"{key}_split", key)
        try:
            check_spec(recipe.data_spec(spec), split, download=download)
        except UsageError as exc:
            about_split = f"{key}_split" in data and "split" in str(exc)
            where = recipe.location(f"data.{key}_split" if about_split else f"data.{key}" if key in data
                                    else "data.train")
            raise UsageError(f"{where}: data.{key}: {exc}") from None
    extra = (recipe.values.get("finetune") or {}).get("extra_data")
    if isinstance(extra, str):
        try:
            check_spec(recipe.data_spec(extra), "train", download=download)
        except UsageError as exc:
            raise UsageError(f"{recipe.location('finetune.extra_data')}: finetune.extra_data: {exc}") from None


def _option_key(message: str, section: dict[str, Any]) -> str | None:
    for name in section:
        if f"--{name.replace('_', '-')} " in message + " " or f"{name} " in message:
            return name
    return None


def _check_semantics(recipe: Recipe) -> None:
    """Checks across keys and value ranges, each error pointing at the key's line."""
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
        for name in ("n", "batch_size", "steps"):
            if name in ev and ev[name] <= 0:
                raise UsageError(f"{recipe.location(f'evaluate.{name}')}: evaluate.{name} must be positive")
        cfg = recipe_evaluation(v)
        for i, attack in enumerate(ev.get("attacks", ["pgd"])):
            try:
                plan_attack(attack, eps=cfg.eps, norm=cfg.norm, fast=cfg.fast and attack == "autoattack",
                            steps=cfg.steps if takes_steps(attack) else None)
            except UsageError as exc:
                raise UsageError(f"{recipe.location(f'evaluate.attacks[{i}]')}: {exc}") from None

