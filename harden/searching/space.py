"""The search space of ``harden search``, read off the model itself.

Each dimension belongs to a transform that declares it (:meth:`harden.transforms.Transform.search_dimensions`;
built-ins: stage widths, last-stage width, strides, activation, upsample; plugins may add their own) with a
few strengths; its first choice is always "leave the model as it is", so the all-first candidate is the base
model. A transform offers its dimensions only where it can act (stride patterns for the downsampling points
the traced graph has, ...). Every choice is a plain string, so that Optuna can store it and two processes
build the same space from the same model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from harden.errors import UsageError, close_matches
from harden.model import HardenedModel
from harden.transforms import KEEP, SearchDimension, Transform, list_transforms

Dimension = SearchDimension  # the name this module has always used


def searched_transforms() -> dict[str, type[Transform]]:
    """The transforms that declare search dimensions, by name, in the order candidates apply them."""
    found = [cls for cls in dict.fromkeys(list_transforms().values()) if cls.search_order is not None]
    return {cls.name: cls for cls in sorted(found, key=lambda cls: (cls.search_order, cls.name))}


def dimension_names() -> tuple[str, ...]:
    """What ``--space`` accepts: the names of the searched transforms."""
    return tuple(searched_transforms())


@dataclass
class SearchSpace:
    """The dimensions searched for one model, and why others were left out."""

    dimensions: list[Dimension]
    notes: list[str] = field(default_factory=list)
    extras: list[str] = field(default_factory=list)
    searched: list[type[Transform]] = field(default_factory=list)

    def identity(self) -> dict[str, str]:
        """The parameters of the base model (every dimension at its first choice)."""
        return {d.name: d.choices[0] for d in self.dimensions}

    def size(self) -> int:
        """How many distinct candidates the space holds."""
        n = 1
        for d in self.dimensions:
            n *= len(d.choices)
        return n

    def transforms(self, params: dict[str, str]) -> list[str]:
        """The transform strings of a candidate: each searched transform's, in order, then the extras chosen."""
        out = [spec for cls in self.searched if (spec := cls.search_spec(params)) is not None]
        out += [spec for i, spec in enumerate(self.extras) if params.get(f"transform-{i}", KEEP) != KEEP]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"dimensions": {d.name: list(d.choices) for d in self.dimensions}, "notes": list(self.notes),
                "candidates": self.size()}


def parse_dimensions(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"upsample,activation"`` -> the named dimensions (all: None, none: ``"none"``); unknown names fail."""
    known = dimension_names()
    if text is None:
        return known
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    if names == ["none"]:
        return ()
    if not names:
        raise UsageError(f"--space names no dimension; choose from {', '.join(known)} (or none)")
    for name in names:
        if name not in known:
            raise UsageError(f"unknown search dimension '{name}'{close_matches(name, known)} "
                             f"(known: {', '.join(known)})")
    return tuple(n for n in known if n in names)


def build_space(model: HardenedModel, dimensions: Sequence[str] | str | None = None,
                extra: Sequence[str] = ()) -> SearchSpace:
    """The search space for ``model``: the requested dimensions that its graph allows.

    ``extra`` transforms (any registered transform, plugins included, e.g. ``"input-noise:sigma=0.05"``)
    are each searched on or off, applied after the searched ones.
    """
    from harden.graph import trace_with_shapes
    from harden.transforms import parse_transform

    wanted = parse_dimensions(dimensions)
    for spec in extra:
        parse_transform(spec)  # an unknown transform or a bad parameter is a usage error now, not in a trial
    dims: list[Dimension] = []
    notes: list[str] = []
    try:
        traced = trace_with_shapes(model.net, model.net_input_size()) if wanted else None
    except Exception as exc:
        traced = None
        graphless = [n for n, cls in searched_transforms().items() if not cls.search_needs_graph]
        notes.append(f"the model could not be traced ({str(exc).splitlines()[0][:80]}); only "
                     f"{' and '.join(graphless)} are searched")
    searched = [cls for name, cls in searched_transforms().items() if name in wanted]
    for cls in searched:
        if traced is None and cls.search_needs_graph:
            continue
        found, note = cls.search_dimensions(model, traced)
        dims += found
        if note:
            notes.append(note)
    dims += [Dimension(f"transform-{i}", (KEEP, spec), f"apply {spec}") for i, spec in enumerate(extra)]
    if not dims:
        raise UsageError(f"nothing to search for {model.spec}: {'; '.join(notes) or 'no dimension chosen'}")
    return SearchSpace(dims, notes, list(extra), searched)
