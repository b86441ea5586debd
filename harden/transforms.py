"""The transform interface, the registry and the ``NAME:key=value,...`` string form.

Built-in transforms live in ``plugins/`` (imported as ``harden_plugins``) and, like any third-party
plugin, are found through the ``harden.transforms`` entry-point group. A plugin is a subclass of
:class:`Transform`; ``harden.register_transform`` registers one at run time without packaging.
"""

from __future__ import annotations

import abc
import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from harden.bpda import StraightThrough, straight_through  # noqa: F401  (part of the transform contract)
from harden.errors import HardenError, UsageError, close_matches
from harden.model import HardenedModel
from harden.provenance import TransformEntry
from harden.registry import Registry
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


@dataclass(frozen=True)
class Shorthand:
    """A ``harden apply`` option that stands for a transform, declared by the transform itself.

    ``param``: the parameter the option's value sets (None: a flag applying the transform with its
    defaults). ``convert`` rewrites the value into the parameter's text. ``modifies``: the option sets
    ``param`` of the transform another option of the same class stands for (``--upsample-mode``).
    ``order``: where the transform goes among the shorthands given together (lower first; ``-t``
    transforms follow them all). ``excludes``: options that cannot be given with this one.
    """

    option: str
    param: str | None = None
    metavar: str = ""
    help: str = ""
    order: int = 100
    convert: Callable[[str], str] | None = None
    modifies: str | None = None
    choices: tuple[str, ...] | None = None
    default: str | None = None
    excludes: tuple[str, ...] = ()

    @property
    def dest(self) -> str:
        """The keyword the command line passes the option's value under (``--stride-mod`` -> ``stride_mod``)."""
        return self.option.lstrip("-").replace("-", "_")


#: the choice of a search dimension that leaves the model as it is
KEEP = "keep"


@dataclass(frozen=True)
class SearchDimension:
    """One setting ``harden search`` tries: an Optuna parameter ``name`` and its choices (first: :data:`KEEP`)."""

    name: str
    choices: tuple[str, ...]
    help: str = ""


class Transform(abc.ABC):
    """Base class of every transform.

    Subclasses set ``name``, ``summary`` and ``params`` and implement :meth:`apply`, which edits
    ``model`` in place and returns an :class:`Applied`. :meth:`replay` rebuilds the same change on a
    freshly built model from the recorded state (the default calls :meth:`apply`); transforms whose
    result depends on the weights (channel selection) must honour ``state``.

    A transform also declares how the rest of harden offers it: ``shorthands`` (``harden apply``
    options, :class:`Shorthand`), and for ``harden search`` a ``search_order`` (None: not searched),
    :meth:`search_dimensions` and :meth:`search_spec`. Adding a transform touches its own file only.

    A transform that inserts operators whose gradient an attack should also try to pass straight
    through (BPDA) makes them :class:`harden.bpda.StraightThrough` modules and sets
    ``inserts_straight_through``; :func:`harden.bpda.straight_through` then gives them identity gradients.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    provider: str = "harden"
    shorthands: ClassVar[tuple[Shorthand, ...]] = ()
    search_order: ClassVar[int | None] = None
    search_needs_graph: ClassVar[bool] = True  # its dimensions are read off the traced graph
    inserts_straight_through: ClassVar[bool] = False  # its modules are StraightThrough: evaluate with BPDA too

    @classmethod
    def search_dimensions(cls, model: HardenedModel, traced: Any) -> tuple[list[SearchDimension], str | None]:
        """The dimensions ``harden search`` tries for ``model`` (``traced``: its traced graph, or None when
        ``search_needs_graph`` is False), or none and a note saying why the transform cannot act."""
        return [], None

    @classmethod
    def search_spec(cls, params: dict[str, str]) -> str | None:
        """The transform string of a candidate's parameters, or None when they keep the model as it is."""
        return None

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


def shorthand_specs(values: dict[str, Any], transforms: dict[str, type[Transform]] | None = None) -> list[str]:
    """The transform strings that the shorthand options in ``values`` (by :attr:`Shorthand.dest`) stand for,
    ordered by :attr:`Shorthand.order`."""
    classes = transforms if transforms is not None else list_transforms()
    given = [(s, cls) for cls in dict.fromkeys(classes.values()) for s in cls.shorthands
             if s.modifies is None and values.get(s.dest) not in (None, False)]
    for s, _ in given:
        clash = [o for o in s.excludes if any(other.option == o for other, _ in given)]
        if clash:
            raise UsageError(f"use either {s.option} or {clash[0]}, not both")
    present = {s.option for s, _ in given}
    for cls in dict.fromkeys(classes.values()):
        for m in cls.shorthands:
            if m.modifies and m.modifies not in present and values.get(m.dest) not in (None, False, m.default):
                raise UsageError(f"{m.option} goes with {m.modifies}, which was not given")
    specs = []
    for s, cls in sorted(given, key=lambda item: item[0].order):
        value = values[s.dest]
        args = [] if s.param is None else [f"{s.param}={s.convert(str(value)) if s.convert else value}"]
        args += [f"{m.param}={values[m.dest]}" for m in cls.shorthands
                 if m.modifies == s.option and values.get(m.dest) is not None]
        specs.append(f"{cls.name}:{','.join(args)}" if args else cls.name)
    return specs


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


# ---------------------------------------------------------------------------------------- registry


def _adopt(entry_point: Any, cls: Any) -> type[Transform]:
    """A transform class found through an entry point, its provider set to the distribution shipping it."""
    if not (isinstance(cls, type) and issubclass(cls, Transform)) or not cls.name:
        raise TypeError(f"{entry_point.value} is not a Transform subclass with a name")
    dist = getattr(entry_point, "dist", None)
    cls.provider = dist.name if dist is not None else entry_point.value.split(".")[0]
    if cls.name != entry_point.name:
        TRANSFORMS.register(cls.name, cls, replace=True)
    return cls


#: every transform by name: the ``harden.transforms`` entry points (harden's own in ``plugins/`` among
#: them) and classes registered at run time with :func:`register_transform`
TRANSFORMS: Registry[type[Transform]] = Registry("transform", entry_points=ENTRY_POINT_GROUP, adopt=_adopt)


def register_transform(cls: type[Transform], *, provider: str | None = None) -> type[Transform]:
    """Register a :class:`Transform` subclass under ``cls.name`` (usable as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Transform)) or not cls.name:
        raise TypeError("register_transform takes a Transform subclass with a non-empty `name`")
    if provider is not None:
        cls.provider = provider
    return TRANSFORMS.register(cls.name, cls, replace=True)


def list_transforms() -> dict[str, type[Transform]]:
    """All available transforms by name (entry points and run-time registrations)."""
    return dict(sorted(TRANSFORMS.items().items()))


def get_transform(name: str) -> type[Transform]:
    """The transform class called ``name``, or a one-line UsageError with the closest names."""
    if name not in TRANSFORMS:
        raise UsageError(f"unknown transform '{name}'{close_matches(name, TRANSFORMS.names())} (see `harden list`)")
    return TRANSFORMS.get(name)


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


def replay_entry(model: HardenedModel, entry: TransformEntry) -> None:
    """Redo a recorded transform on ``model`` (its :meth:`Transform.replay` with the recorded state) and
    append the entry to the model's provenance."""
    make_transform(entry.name, entry.config).replay(model, entry.state)
    model.provenance.transforms.append(copy.deepcopy(entry))


# ---------------------------------------------------------------------------- common value parsers


def positive(value: float) -> str | None:
    """A Param check: None when ``value`` is above zero, else the reason it is refused."""
    return None if value > 0 else "must be positive"
