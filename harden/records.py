"""Typed records read from and written to JSON mappings: the one mechanism behind a model file's provenance
(:mod:`harden.provenance`) and the evaluation report (:mod:`harden.evaluation.report_types`).

A record is a dataclass subclassing :class:`JsonRecord`. :meth:`JsonRecord.from_dict` checks every field
against its annotation (records nested, lists and string-keyed mappings followed) and raises the record's
``error`` class naming the first field that is wrong; keys it does not know are kept in ``extras`` and
written back by :meth:`JsonRecord.to_dict`, so a round trip loses nothing a newer harden wrote. A field
whose metadata is :data:`OMIT_NONE` or :data:`OMIT_EMPTY` is left out of ``to_dict()`` when None (or empty).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar, Union

OMIT_NONE = {"omit": "none"}    # field metadata: left out of to_dict() when None
OMIT_EMPTY = {"omit": "empty"}  # left out when None or empty

R = TypeVar("R", bound="JsonRecord")


@dataclass(kw_only=True)
class JsonRecord:
    """Typed fields read from and written to a JSON mapping; keys it does not know are kept in ``extras``.

    Subclasses set ``error`` (the exception a malformed mapping raises) and ``what`` (how messages name a
    top-level mapping).
    """

    error: ClassVar[type[Exception]] = ValueError
    what: ClassVar[str] = "record"
    extras: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls: type[R], data: Any, where: str = "") -> R:
        """Check ``data`` field by field against the annotations and build the record."""
        if not isinstance(data, Mapping):
            raise cls.error(f"{where or cls.what}: expected a mapping, got {_kind(data)}")
        hints = _hints(cls)
        values: dict[str, Any] = {}
        for f in _fields(cls):
            name = f"{where}.{f.name}" if where else f.name
            if f.name in data:
                values[f.name] = _checked(data[f.name], hints[f.name], name, cls.error)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise cls.error(f"{name} is missing")
        known = {f.name for f in _fields(cls)}
        extras = {k: copy.deepcopy(v) for k, v in data.items() if k not in known}
        if any(not isinstance(k, str) for k in extras):
            raise cls.error(f"{where or cls.what}: keys must be strings")
        return cls(**values, extras=extras)

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON values (a deep copy): its fields in order, then the keys kept in ``extras``."""
        out = {name: plain(value) for name, value in self.present()}
        out.update(copy.deepcopy(self.extras))
        return out

    def present(self) -> Iterator[tuple[str, Any]]:
        """The fields ``to_dict`` writes, with their values."""
        for f in _fields(type(self)):
            value = getattr(self, f.name)
            omit = f.metadata.get("omit")
            if (omit == "none" and value is None) or (omit == "empty" and not value):
                continue
            yield f.name, value


@functools.cache
def _fields(cls: type) -> tuple[dataclasses.Field[Any], ...]:
    return tuple(f for f in dataclasses.fields(cls) if f.name != "extras")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _checked(value: Any, hint: Any, where: str, error: type[Exception]) -> Any:
    """``value`` if it fits the type ``hint`` (records built, containers copied), else ``error``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return copy.deepcopy(value)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _checked(value, inner, where, error)
    if isinstance(hint, type) and issubclass(hint, JsonRecord):
        return hint.from_dict(value, where)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise error(f"{where}: expected a list, got {_kind(value)}")
        return [_checked(v, args[0], f"{where}[{i}]", error) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise error(f"{where}: expected a mapping with string keys, got {_kind(value)}")
        return {k: _checked(v, args[1], f"{where}.{k}", error) for k, v in value.items()}
    accepted = (int, float) if hint is float else (hint,)
    if isinstance(value, bool) and hint is not bool or not isinstance(value, accepted):
        raise error(f"{where}: expected {hint.__name__}, got {_kind(value)}")
    return value


def plain(value: Any) -> Any:
    """``value`` as plain JSON values: records as their ``to_dict()``, lists followed, the rest copied."""
    if isinstance(value, JsonRecord):
        return value.to_dict()
    if isinstance(value, list):
        return [plain(v) for v in value]
    return copy.deepcopy(value)
