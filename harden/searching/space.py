"""The search space of ``harden search``, read off the model itself.

Each dimension is one of harden's transforms with a few strengths; its first choice is always "leave
the model as it is", so the all-first candidate is the base model. A dimension is offered only where
its transform can act: stride patterns for the downsampling points the traced graph has, activation
families for the activations it uses, widths for the stages it has. Every choice is a plain string,
so that Optuna can store it and two processes build the same space from the same model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from harden.errors import UsageError, close_matches
from harden.model import HardenedModel

KEEP = "keep"
DIMENSIONS = ("stage-widths", "last-stage-width", "strides", "activation", "upsample")
UPSAMPLE_CHOICES = (KEEP, "2:nearest", "2:bilinear")
ACTIVATION_CHOICES = (KEEP, "silu", "gelu", "softplus")
LAST_STAGE_CHOICES = (KEEP, "0.75", "0.5")
STAGE_WIDTH_CHOICES = (KEEP, "0.5", "2")


@dataclass(frozen=True)
class Dimension:
    """One searched setting: an Optuna parameter ``name`` and its choices (the first leaves the model alone)."""

    name: str
    choices: tuple[str, ...]
    help: str = ""


@dataclass
class SearchSpace:
    """The dimensions searched for one model, and why others were left out."""

    dimensions: list[Dimension]
    notes: list[str] = field(default_factory=list)
    stage_count: int = 0
    extras: list[str] = field(default_factory=list)

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
        """The transform strings of a candidate: stage widths, last-stage width, strides, activation, upsample."""
        out = []
        widths = [params.get(f"stage-width-{i}", KEEP) for i in range(self.stage_count)]
        if any(w != KEEP for w in widths):  # first: the stages are those of the base model
            out.append("stage-widths:widths=" + "/".join("1" if w == KEEP else w for w in widths))
        ratio = params.get("last-stage-width", KEEP)
        if ratio != KEEP:
            out.append(f"last-stage-width:ratio={ratio}")
        strides = params.get("strides", KEEP)
        if strides != KEEP:
            out.append(f"strides:pattern={strides}")
        act = params.get("activation", KEEP)
        if act != KEEP:
            out.append(f"activation:name={act}")
        up = params.get("upsample", KEEP)
        if up != KEEP:
            factor, _, mode = up.partition(":")
            out.append(f"upsample:factor={factor},mode={mode or 'nearest'}")
        out += [spec for i, spec in enumerate(self.extras) if params.get(f"transform-{i}", KEEP) != KEEP]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"dimensions": {d.name: list(d.choices) for d in self.dimensions}, "notes": list(self.notes),
                "candidates": self.size()}


def parse_dimensions(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"upsample,activation"`` -> the named dimensions (all: None, none: ``"none"``); unknown names fail."""
    if text is None:
        return DIMENSIONS
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    if names == ["none"]:
        return ()
    if not names:
        raise UsageError(f"--space names no dimension; choose from {', '.join(DIMENSIONS)} (or none)")
    for name in names:
        if name not in DIMENSIONS:
            raise UsageError(f"unknown search dimension '{name}'{close_matches(name, DIMENSIONS)} "
                             f"(known: {', '.join(DIMENSIONS)})")
    return tuple(n for n in DIMENSIONS if n in names)


def _stride_patterns(points: Sequence[Any]) -> list[str]:
    """The current pattern, each point with its stride halved, and the first two such points halved together."""
    current = [p.stride for p in points]
    halvable = [i for i, s in enumerate(current) if s >= 2]
    patterns = []
    for group in [[i] for i in halvable] + ([halvable[:2]] if len(halvable) >= 2 else []):
        new = list(current)
        for i in group:
            new[i] = current[i] // 2
        patterns.append("".join(map(str, new)))
    return patterns


def _stride_dimension(model: HardenedModel, traced: Any) -> tuple[Dimension | None, str | None]:
    from harden.graph import find_downsampling_points

    points = find_downsampling_points(traced)
    if not points or any(not op.editable for p in points for op in p.ops) or any(p.stride > 9 for p in points):
        return None, "strides: no downsampling points harden can edit"
    current = "".join(str(p.stride) for p in points)
    return Dimension("strides", (KEEP, *_stride_patterns(points)), f"stride per downsampling point (now {current})"), \
        None


def _activation_dimension(model: HardenedModel) -> tuple[Dimension | None, str | None]:
    from harden.graph import find_activation_sites

    try:
        sites = find_activation_sites(model.net, "relu")
    except Exception as exc:  # an untraceable block: say so rather than fail the search
        return None, f"activation: could not scan the activations ({str(exc).splitlines()[0][:80]})"
    if sites.empty():
        return None, "activation: the model has no ReLU-family activation to replace"
    return Dimension("activation", ACTIVATION_CHOICES, "replace ReLU-family activations"), None


def _stage_dimensions(model: HardenedModel, traced: Any) -> tuple[list[Dimension], int, str | None]:
    from harden.graph import find_head, find_stages

    found = find_stages(traced, head=find_head(traced))
    stages = [s for s in found if not s.stem]
    if not stages or any(s.tokens for s in found):
        return [], 0, "widths: the model has no convolutional stages"
    dims = [Dimension(f"stage-width-{i}", STAGE_WIDTH_CHOICES, f"width factor of stage {i + 1}")
            for i in range(len(stages))]
    return dims, len(stages), None


def build_space(model: HardenedModel, dimensions: Sequence[str] | str | None = None,
                extra: Sequence[str] = ()) -> SearchSpace:
    """The search space for ``model``: the requested dimensions that its graph allows.

    ``extra`` transforms (any registered transform, plugins included, e.g. ``"input-noise:sigma=0.05"``)
    are each searched on or off, applied after the built-in ones.
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
        notes.append(f"the model could not be traced ({str(exc).splitlines()[0][:80]}); only upsample and "
                     "activation are searched")
    stage_count = 0
    for name in wanted:
        dim: Dimension | None = None
        note = None
        if name == "upsample":
            dim = Dimension("upsample", UPSAMPLE_CHOICES, "upsample the input inside the model")
        elif name == "activation":
            dim, note = _activation_dimension(model)
        elif traced is None:
            continue
        elif name == "strides":
            dim, note = _stride_dimension(model, traced)
        elif name == "last-stage-width":
            stages, _, note = _stage_dimensions(model, traced)
            dim = Dimension("last-stage-width", LAST_STAGE_CHOICES, "fraction of the last stage's channels kept") \
                if stages else None
        else:
            stage_dims, stage_count, note = _stage_dimensions(model, traced)
            dims += stage_dims
        if dim is not None:
            dims.append(dim)
        if note:
            notes.append(note)
    dims += [Dimension(f"transform-{i}", (KEEP, spec), f"apply {spec}") for i, spec in enumerate(extra)]
    if not dims:
        raise UsageError(f"nothing to search for {model.spec}: {'; '.join(notes) or 'no dimension chosen'}")
    return SearchSpace(dims, notes, stage_count, list(extra))
