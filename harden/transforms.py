"""The transform interface, the registry and the ``NAME:key=value,...`` string form.

Built-in transforms live in ``plugins/`` (imported as ``harden_plugins``) and, like any third-party
plugin, are found through the ``harden.transforms`` entry-point group. A plugin is a subclass of
:class:`Transform`; ``harden.register_transform`` registers one at run time without packaging.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, ClassVar

from harden.errors import HardenError, UsageError, close_matches
from harden.model import HardenedModel
from harden.schemas.fields import parse_number  # noqa: F401  (importable from here, as before)

ENTRY_POINT_GROUP = "harden.transforms"


@dataclass(frozen=True)
class Param:
    """One parameter of a transform: its type, default, and an optional check returning an error text."""

    name: str
    type: Callable[[str], Any]
    default: Any = None
    required: bool = False
    help: str = ""
    check: Callable[[Any], str | None] | None = None
    choices: Sequence[Any] | None = None


@dataclass
class Applied:
    """What a transform did: human-readable changes and the JSON state needed to replay it exactly."""

    changes: list[str] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)


class Transform(abc.ABC):
    """Base class of every transform.

    Subclasses set ``name``, ``summary`` and ``params`` and implement :meth:`apply`, which edits
    ``model`` in place and returns an :class:`Applied`. :meth:`replay` rebuilds the same change on a
    freshly built model from the recorded state (the default calls :meth:`apply`); transforms whose
    result depends on the weights (channel selection) must honour ``state``.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    provider: str = "harden"

    def __init__(self, **values: Any) -> None:
        known = {p.name: p for p in self.params}
        for key in values:
            if key not in known:
                raise UsageError(
                    f"transform '{self.name}' has no parameter '{key}'"
                    f" (parameters: {', '.join(known) or 'none'})"
                )
        config: dict[str, Any] = {}
        for p in self.params:
            if p.name in values:
                value = values[p.name]
                if isinstance(value, str) and p.type is not str:
                    try:
                        value = p.type(value)
                    except (TypeError, ValueError) as exc:
                        raise UsageError(f"{self.name}: bad value {value!r} for '{p.name}' ({exc})") from None
            elif p.required:
                raise UsageError(f"transform '{self.name}' needs '{p.name}' ({p.help})")
            else:
                value = p.default
            if p.choices is not None and value not in p.choices:
                raise UsageError(f"{self.name}: '{p.name}' must be one of {', '.join(map(str, p.choices))}, "
                                 f"got {value!r}{close_matches(str(value), map(str, p.choices))}")
            if p.check is not None and value is not None:
                problem = p.check(value)
                if problem:
                    raise UsageError(f"{self.name}: bad {p.name}={value!r}: {problem}")
            config[p.name] = value
        self.config = config

    @abc.abstractmethod
    def apply(self, model: HardenedModel) -> Applied:
        """Change ``model`` in place and say what changed."""

    def replay(self, model: HardenedModel, state: dict[str, Any]) -> None:
        """Redo this transform on a freshly built model, using the state recorded by :meth:`apply`."""
        self.apply(model)

    def spec(self) -> str:
        """The string form, e.g. ``upsample:factor=2,mode=nearest``."""
        args = ",".join(f"{k}={_fmt(v)}" for k, v in self.config.items() if v is not None)
        return f"{self.name}:{args}" if args else self.name

    def __repr__(self) -> str:
        return f"<Transform {self.spec()}>"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


# ---------------------------------------------------------------------------------------- registry

_REGISTRY: dict[str, type[Transform]] = {}
_ENTRY_POINTS_LOADED = False


def register_transform(cls: type[Transform], *, provider: str | None = None) -> type[Transform]:
    """Register a :class:`Transform` subclass under ``cls.name`` (usable as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Transform)) or not cls.name:
        raise TypeError("register_transform takes a Transform subclass with a non-empty `name`")
    if provider is not None:
        cls.provider = provider
    _REGISTRY[cls.name] = cls
    return cls


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _REGISTRY:
            continue
        try:
            cls = ep.load()
        except Exception as exc:  # a broken third-party plugin must not break harden
            import warnings

            warnings.warn(f"harden: transform plugin '{ep.name}' ({ep.value}) failed to load: {exc}",
                          stacklevel=2)
            continue
        dist = getattr(ep, "dist", None)
        register_transform(cls, provider=dist.name if dist is not None else ep.value.split(".")[0])
        if cls.name != ep.name:
            _REGISTRY[ep.name] = cls


def list_transforms() -> dict[str, type[Transform]]:
    """All available transforms by name (entry points and run-time registrations)."""
    _load_entry_points()
    return dict(sorted(_REGISTRY.items()))


def get_transform(name: str) -> type[Transform]:
    registry = list_transforms()
    if name not in registry:
        raise UsageError(f"unknown transform '{name}'{close_matches(name, registry)}"
                         " (see `harden list`)")
    return registry[name]


def parse_transform(spec: str | Transform) -> Transform:
    """Turn ``"NAME"`` or ``"NAME:key=value,..."`` (or a Transform) into a Transform instance."""
    if isinstance(spec, Transform):
        return spec
    if not isinstance(spec, str):
        raise UsageError(f"a transform is a string like 'upsample:factor=2' or a Transform, got {spec!r}")
    name, _, argstr = spec.strip().partition(":")
    cls = get_transform(name.strip())
    values: dict[str, str] = {}
    if argstr.strip():
        for item in argstr.split(","):
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise UsageError(f"bad transform argument '{item}' in '{spec}'; write key=value")
            values[key.strip()] = value.strip()
    return cls(**values)


def make_transform(name: str, config: dict[str, Any]) -> Transform:
    """Instantiate a registered transform from a recorded config (used when replaying a recipe)."""
    cls = get_transform(name)
    try:
        return cls(**{k: v for k, v in config.items() if v is not None})
    except UsageError as exc:
        raise HardenError(f"recorded transform '{name}' no longer accepts its parameters: {exc}") from exc


# ---------------------------------------------------------------------------- common value parsers


def positive(value: float) -> str | None:
    return None if value > 0 else "must be positive"
