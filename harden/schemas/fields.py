"""Schema fields: a setting's default, kind, choices and help, written once on a dataclass field.

A command's schema is a dataclass whose fields are made by :func:`text`, :func:`integer`,
:func:`number`, :func:`flag` or :func:`texts`. Each field carries a :class:`Setting` in its metadata;
from it the command line options (:func:`harden.cli._options.schema_options`), the recipe's YAML keys
(:func:`yaml_keys`) and the checks of the library's keyword arguments (:func:`check_names`,
:func:`parse_numbers`, :func:`check_choices`) are derived. This module imports neither torch nor
click, so a command's ``--help`` can read the schemas cheaply.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from harden.errors import UsageError, close_matches

NORMS = ("Linf", "L2")  # the norms of the eps-ball (the threat models) that attacks and settings take


def parse_number(text: str | float | int) -> float:
    """Parse ``0.5``, ``8/255`` or ``1e-3`` into a float."""
    if isinstance(text, (int, float)):
        return float(text)
    try:
        return float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"'{text}' is not a number") from None


@dataclass(frozen=True)
class Setting:
    """What a schema field is beyond its name, type and default.

    ``kind`` is how a value is read (``str``, ``int``, ``number`` such as ``"8/255"``, ``bool``,
    ``list[str]``); ``flags`` the option's spellings when not ``--the-name``; ``cli_text``: the
    command line hands the text over as typed and the library reads and checks it (its messages,
    not click's); ``path`` is ``"file"`` or ``"folder"`` for a path option; ``cli``/``yaml``: whether
    the setting is a command line option / a recipe key; ``default_text``: the default as shown.
    """

    kind: str
    help: str = ""
    choices: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    metavar: str | None = None
    cli_text: bool = False
    path: str | None = None
    required: bool = False
    cli: bool = True
    yaml: bool = True
    default_text: str | None = None
    #: a :class:`harden.registry.Registry` whose names are the choices (read when asked, so plugins count)
    registry: Any = None

    def choice_names(self) -> tuple[str, ...]:
        """The allowed values: the registry's names now, else the fixed ``choices``."""
        return tuple(self.registry.names()) if self.registry is not None else self.choices

    def option_name(self, name: str) -> str:
        """The long option that names this setting in messages: ``--step-size``."""
        longs = [f for f in self.flags if f.startswith("--")]
        return longs[0] if longs else f"--{name.replace('_', '-')}"


def _field(default: Any, setting: Setting) -> Any:
    return dataclasses.field(default=default, metadata={"setting": setting})


def text(default: str | None = None, **meta: Any) -> Any:
    """A string setting (``choices`` restrict it)."""
    return _field(default, Setting("str", **meta))


def integer(default: int | str | None = None, **meta: Any) -> Any:
    """A whole-number setting."""
    return _field(default, Setting("int", **meta))


def number(default: str | None = None, **meta: Any) -> Any:
    """A real-number setting, given as text such as ``"8/255"``; the field's default is its value."""
    value = None if default is None else parse_number(default)
    return _field(value, Setting("number", default_text=default, **meta))


def flag(default: bool | None = False, **meta: Any) -> Any:
    """An on/off setting: ``--name`` when off by default, ``--no-name`` when on, both when unset (None)."""
    return _field(default, Setting("bool", **meta))


def value(kind: str, default: Any = None, **meta: Any) -> Any:
    """A setting of another kind the recipe checker reads (``input_size``, ``list[number]``, ``kwargs``)."""
    return _field(default, Setting(kind, **meta))


def texts(**meta: Any) -> Any:
    """A list of strings; on the command line, a repeatable option."""
    return _field((), Setting("list[str]", **meta))


def settings_of(schema: type) -> dict[str, tuple[dataclasses.Field, Setting]]:
    """The schema's fields and their settings, in the order they are declared."""
    out = {}
    for f in dataclasses.fields(schema):
        setting = f.metadata.get("setting")
        if setting is None:
            raise TypeError(f"{schema.__name__}.{f.name} is not a schema field (use harden.schemas.fields)")
        out[f.name] = (f, setting)
    return out


def yaml_keys(schema: type) -> dict[str, Setting]:
    """The recipe keys of ``schema``: name -> setting, in the declared order."""
    return {name: s for name, (_, s) in settings_of(schema).items() if s.yaml}


def check_names(schema: type, options: Mapping[str, Any], what: str) -> None:
    """Refuse a keyword that names no field of ``schema``, suggesting close names."""
    names = [f.name for f in dataclasses.fields(schema)]
    for key in options:
        if key not in names:
            raise UsageError(f"unknown {what} '{key}'{close_matches(key, names)}")


def parse_numbers(schema: type, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the number settings given as text (``"8/255"``) read into floats."""
    out = dict(values)
    for name, (_, setting) in settings_of(schema).items():
        if setting.kind == "number" and isinstance(out.get(name), str):
            try:
                out[name] = parse_number(out[name])
            except ValueError as exc:
                raise UsageError(f"{name.replace('_', '-')}: {exc}") from None
    return out


def check_choices(config: Any) -> None:
    """Raise :class:`UsageError` for the first setting of ``config`` that is not one of its choices."""
    for name, (_, setting) in settings_of(type(config)).items():
        value = getattr(config, name)
        if setting.registry is not None:
            if value not in setting.registry:
                raise UsageError(f"{setting.option_name(name)}: {setting.registry.get_error(value)}")
            continue
        if setting.choices and value not in setting.choices:
            raise UsageError(f"{setting.option_name(name)} must be one of {', '.join(setting.choices)}, "
                             f"got '{value}'")


def whole_number(value: Any, option: str, *, allow: Sequence[str] = ()) -> Any:
    """``value`` with a whole number given as text read; the words in ``allow`` and non-text pass as they are."""
    if not isinstance(value, str):
        return value
    if value.strip().lower() in allow:
        return value.strip().lower()
    try:
        return int(value)
    except ValueError:
        extra = f" or {' or '.join(allow)}" if allow else ""
        raise UsageError(f"{option} must be a whole number{extra}, got '{value}'") from None
