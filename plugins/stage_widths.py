"""stage-widths: multiply the width of every stage of a CNN (Huang et al., NeurIPS 2021, WRN-34-R).

Huang et al. ("Exploring Architectural Ingredients of Adversarially Robust Deep Neural Networks")
found that, at a fixed budget, wide ResNets are more robust with wider early stages and a narrower
last stage: their WRN-34-R has 16, 320, 640, 512 channels where WRN-34-10 has 16, 160, 320, 640.
``stage-widths:widths=2/2/0.8`` makes that change on ``cifar:wrn-34-10``, and the same kind of change
on any CNN, one factor per stage.

Stages come from :mod:`harden.graph.stages`; the stem (a stem stage, and in the first stage the layers
before the first residual block, e.g. WRN's first 3x3 conv) keeps its width. Channels are changed per
coupled group of torch-pruning's dependency graph, so every layer joined by residual adds,
concatenations, norms, depthwise convolutions or squeeze-excitation gates changes together, and the
inputs of the next stage and of the classifier follow. A group belongs to the stage of the layers that
produce its channels.

- Shrinking (factor < 1) reuses last-stage-width's surgery: torch-pruning removes the channels with the
  smallest L1 filter norm; the kept channels are recorded for replay.
- Growing (factor > 1) is :mod:`harden.channels.growth` (torch-pruning has no expand operation): existing
  weights stay where they are, new output filters get a small random init (1e-2 times the spread of the
  layer's existing weights), new input columns of existing filters are zero, new norm channels start as
  a fresh norm layer (gamma 1, beta 0, running mean 0, variance 1). As no new channel reaches an old one
  except through a zero column, the widened network computes the same function as before (exactly, up
  to floating-point summation order, for batch norm networks; GroupNorm gets whole new groups; a
  LayerNorm over channels also normalises over the new channels, so its outputs change). Replay only
  needs the new sizes: the weights come from the file.

Networks that shuffle or split their channels (ShuffleNet, MixNet), which torch-pruning does not
follow, are narrowed through :mod:`harden.channels.flow_groups` (factors <= 1 only): whole shuffle groups,
balanced chunks, a share of every split part.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from torch import fx, nn

from harden.channels.analysis import (
    CONV,
    coupled_groups,
    dependency_graph,
    is_channel_norm,
    layer_names,
    layer_width,
    layer_widths,
    param_change,
    param_count,
    width_changes,
)
from harden.channels.flow_groups import (
    FlowAnalysis,
    flow_analysis,
    plan_group,
    remove_classes,
    replay_removal,
)
from harden.channels.growth import ChannelPlan, grow_channels, plan_resize
from harden.channels.surgery import remove_channels
from harden.errors import HardenError, UsageError
from harden.graph import trace_with_shapes
from harden.graph.stages import Stage, feature_nodes, find_head, find_stages, is_residual, width_stages
from harden.graph.tracing import TracedNet
from harden.model import HardenedModel
from harden.transforms import KEEP, Applied, Param, SearchDimension, Shorthand, Transform

NAME = "stage-widths"
_SEPARATOR = re.compile(r"[/xX]")


# ------------------------------------------------------------------------------------------ factors


def _format_factor(value: float) -> str:
    short = format(value, "g")
    return short if float(short) == value else repr(value)


def parse_widths(text: str | Sequence[float | int | str]) -> str:
    """Check ``"2/2/0.8"`` (or ``2x2x0.8``, or a list of numbers) and return its canonical ``a/b/c`` form."""
    items = [str(v) for v in text] if isinstance(text, (list, tuple)) else _SEPARATOR.split(str(text).strip())
    factors = []
    for item in items:
        item = item.strip()
        try:
            value = float(item)
        except ValueError:
            raise ValueError(f"'{item}' is not a number; write one factor per stage, e.g. 2/2/0.8") from None
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"factor {item} must be a positive number (2 doubles a stage, 0.5 halves it)")
        factors.append(value)
    return "/".join(_format_factor(v) for v in factors)


def factors_of(widths: str) -> list[float]:
    """The factors of a canonical ``widths`` value."""
    return [float(v) for v in parse_widths(widths).split("/")]


# ------------------------------------------------------------------------------------------- stages


def _ancestors(node: fx.Node, features: set[fx.Node]) -> set[fx.Node]:
    found: set[fx.Node] = set()
    frontier = [node]
    while frontier:
        current = frontier.pop()
        if current in found or current not in features:
            continue
        found.add(current)
        frontier.extend(current.all_input_nodes)
    return found


def stem_layers(traced: TracedNet, stages: Sequence[Stage]) -> set[str]:
    """Layers whose width is the stem's: those of the stem stages or, when the stem works at the first
    stage's resolution (no stem stage: CIFAR ResNets and WRNs), the layers before the first residual
    block, up to where its shortcut and its residual branch part (WRN's first conv and the
    pre-activation norm of its first block)."""
    found = {p for s in stages if s.stem for p in s.layers}
    if found or not stages:
        return found
    features = feature_nodes(traced.gm)
    nodes = list(traced.gm.graph.nodes)
    first = next((n for n in nodes if n in features and is_residual(n, features)), None)
    if first is None:
        return found
    branches = [_ancestors(i, features) for i in first.all_input_nodes if i in features]
    common = set.intersection(*branches) if branches else set()
    if not common:
        return found
    order = {n: i for i, n in enumerate(nodes)}
    split = max(common, key=order.__getitem__)
    before = {str(n.target) for n in _ancestors(split, features) if n.op == "call_module"}
    return before & set(stages[0].layers)


def find_body_stages(model: HardenedModel) -> tuple[list[Stage], set[str]]:
    """The stages whose width this transform sets (the stem excluded) and the stem's layers."""
    traced = trace_with_shapes(model.net, model.net_input_size())
    stages = find_stages(traced, head=find_head(traced))
    name = model.spec
    if not stages:
        raise HardenError(f"{name} has no convolutional stages; {NAME} applies to CNNs")
    tokens = next((s for s in stages if s.tokens), None)
    if tokens is not None:
        raise HardenError(
            f"{name} has no convolutional stages (after {tokens.convs[0]} it works on token sequences, "
            f"as a vision transformer does); {NAME} applies to CNNs")
    return [s for s in stages if not s.stem], stem_layers(traced, stages)


# --------------------------------------------------------------------------------------------- plan


def _group_factor(path: str, owners: Sequence[int], body: Sequence[Stage], factors: Sequence[float]) -> float:
    """The factor of a group whose channels the stages ``owners`` make; UsageError if they differ."""
    if len({factors[i] for i in owners}) > 1:
        named = ", ".join(f"stage {body[i].index} (x{_format_factor(factors[i])})" for i in owners)
        raise UsageError(f"{NAME}: the channels of {path} are shared by {named} through residual "
                         "adds or concatenations; give these stages the same factor")
    return factors[owners[0]]


def _plan(dg: Any, net: nn.Module, body: Sequence[Stage], stem: set[str],
          factors: Sequence[float]) -> list[ChannelPlan]:
    """One plan per coupled group whose width changes, in stage order."""
    owner = {p: i for i, s in enumerate(body) for p in s.layers if p not in stem}
    plans: list[ChannelPlan] = []
    for path, channels, group, scan in coupled_groups(dg, net, [p for stage in body for p in stage.layers]):
        owners = sorted({owner[p] for p in scan.producers if p in owner})
        if not owners:
            continue  # the stem's channels (or a group of the head)
        factor = _group_factor(path, owners, body, factors)
        if factor == 1:
            continue
        plan = plan_resize(dg, group, scan, path, channels, factor, NAME)
        if plan is not None:
            plans.append(plan)
    return plans


def _resize(model: HardenedModel, body: Sequence[Stage], stem: set[str],
            factors: Sequence[float]) -> tuple[list[str], dict[str, Any]]:
    """Shrink and grow the coupled groups of torch-pruning's dependency graph: notes and state."""
    net, size = model.net, model.net_input_size()
    dg = dependency_graph(net, size)
    plans = _plan(dg, net, body, stem, factors)
    shrink = [p for p in plans if p.kept is not None]
    grow = [p for p in plans if p.kept is None]
    for p in shrink:
        kept = set(p.kept or [])
        remove_channels(dg, net, p.root, p.channels, [i for i in range(p.channels) if i not in kept], who=NAME)
    grow_channels(dg, net, grow, NAME)
    return [], {
        "shrink": [{"root": p.root, "channels": p.channels, "kept": p.kept} for p in shrink],
        "grow": [{"root": p.root, "channels": p.channels, "new": p.new} for p in grow],
    }


def _narrow_flow(analysis: FlowAnalysis, body: Sequence[Stage], stem: set[str],
                 factors: Sequence[float]) -> tuple[list[str], dict[str, Any]]:
    """Narrow the groups of a network that shuffles or splits its channels (:mod:`harden.channels.flow_groups`):
    notes and state."""
    owner = {p: i for i, s in enumerate(body) for p in s.layers if p not in stem}
    plans = []
    for group in analysis.groups:
        owners = sorted({owner[p] for p in group.producers if p in owner})
        if not owners:
            continue
        factor = _group_factor(group.producers[0], owners, body, factors)
        if factor > 1:
            raise HardenError(f"{NAME} cannot widen the channels of {group.producers[0]}: this model "
                              "shuffles or splits its channels, which only channel removal follows; use "
                              "factors <= 1 for this stage")
        if factor < 1:
            plans.append(plan_group(analysis, group, factor))
    shrink = [{"root": e["root"], "channels": e["channels"],
               "kept": sorted(set(range(e["channels"])) - set(e["removed"]))}
              for e in remove_classes(analysis, {c for p in plans for c in p.removed}, NAME)]
    notes = [p.describe() for p in plans if p.unit is not None]
    return notes, {"shrink": shrink, "grow": [], "flow": True}


def _output_layer(net: nn.Module, stage: Stage) -> str | None:
    """The last layer of ``stage`` whose width is the stage's output width (to report it after)."""
    for path in reversed(stage.layers):
        layer = net.get_submodule(path)
        if isinstance(layer, (CONV, nn.Linear)):
            width = layer_width(layer, "out")
        elif is_channel_norm(layer):
            width = layer_width(layer, "chan")
        else:
            continue
        if width == stage.channels:
            return path
    return None


# ---------------------------------------------------------------------------------------- transform


class StageWidths(Transform):
    """Multiply the width of each stage of a CNN (the stem excluded) by its own factor."""

    name = NAME
    summary = "multiply each stage's width, e.g. widths=2/2/0.8: WRN-34-10 -> WRN-34-R (Huang et al. 2021)"
    params = (
        Param("widths", parse_widths, required=True,
              help="one factor per stage (stem excluded), separated by / or x, e.g. 2/2/0.8"),
    )
    # the factors' commas would split the transform's arguments
    shorthands = (Shorthand("--stage-widths", "widths", "F1,F2,...",
                            "Multiply each stage's width (stem excluded), e.g. 2,2,0.8: WRN-34-10 -> WRN-34-R.",
                            order=30, convert=lambda text: text.replace(",", "/")),)
    search_order = 10

    @classmethod
    def search_dimensions(cls, model: HardenedModel, traced: Any) -> tuple[list[SearchDimension], str | None]:
        stages, note = width_stages(traced)
        return [SearchDimension(f"stage-width-{i}", (KEEP, "0.5", "2"), f"width factor of stage {i + 1}")
                for i in range(len(stages))], note

    @classmethod
    def search_spec(cls, params: dict[str, str]) -> str | None:
        widths = [params[k] for k in sorted((k for k in params if k.startswith("stage-width-")),
                                           key=lambda k: int(k.rpartition("-")[2]))]
        if all(w == KEEP for w in widths):
            return None  # first among the searched transforms: the stages are those of the base model
        return "stage-widths:widths=" + "/".join("1" if w == KEEP else w for w in widths)

    def apply(self, model: HardenedModel) -> Applied:
        factors = factors_of(self.config["widths"])
        body, stem = find_body_stages(model)
        if len(factors) != len(body):
            listed = "; ".join(s.describe() for s in body)
            raise UsageError(
                f"{NAME}: {len(factors)} factor{'s' if len(factors) != 1 else ''} given but "
                f"{model.spec} has {len(body)} stage{'s' if len(body) != 1 else ''} "
                f"(the stem excluded): {listed}; "
                f"give one factor per stage, e.g. widths={'/'.join(['1'] * len(body))}")
        net = model.net
        if all(f == 1 for f in factors):
            lines = [f"{s.describe()}: x1" for s in body]
            return Applied([*lines, "every factor is 1: nothing to do"], {"shrink": [], "grow": []})
        before, params_before = layer_widths(net), param_count(net)
        outputs = [_output_layer(net, s) for s in body]
        analysis = flow_analysis(net, model.net_input_size(), NAME)
        if analysis is None:
            notes, state = _resize(model, body, stem, factors)
        else:
            notes, state = _narrow_flow(analysis, body, stem, factors)
        after = layer_widths(net)
        changes = []
        for s, f, path in zip(body, factors, outputs):
            width = f", {before[path][1]} -> {after[path][1]} channels" if path is not None else ""
            changes.append(f"{s.describe()}: x{_format_factor(f)}{width}")
        changes += notes + width_changes(before, after)
        if not state["shrink"] and not state["grow"]:
            changes.append("the factors change no channel count (groups too small)")
        norms = [n for n, m in net.named_modules()
                 if isinstance(m, nn.LayerNorm) and n in before and after[n][1] > before[n][1]]
        if norms:
            changes.append(f"note: {layer_names(norms)} normalise over the new channels too, so the outputs "
                           "change (fine-tune after widening)")
        params_after = param_count(net)
        changes.append(param_change(params_before, params_after))
        return Applied(changes, state)

    def replay(self, model: HardenedModel, state: dict[str, Any]) -> None:
        if "shrink" not in state or "grow" not in state:
            raise HardenError(f"{NAME}: the recipe has no recorded channel changes to replay")
        if not state["shrink"] and not state["grow"]:
            return
        net = model.net
        if state.get("flow"):
            removed = [{"root": e["root"], "channels": e["channels"],
                        "removed": sorted(set(range(int(e["channels"]))) - {int(i) for i in e["kept"]})}
                       for e in state["shrink"]]
            replay_removal(net, model.net_input_size(), removed, NAME)
            return
        dg = dependency_graph(net, model.net_input_size())
        for entry in state["shrink"]:
            channels = int(entry["channels"])
            kept = {int(i) for i in entry["kept"]}
            removed = [i for i in range(channels) if i not in kept]
            remove_channels(dg, net, str(entry["root"]), channels, removed, who=NAME)
        grown = [ChannelPlan(str(e["root"]), int(e["channels"]), int(e["new"])) for e in state["grow"]]
        grow_channels(dg, net, grown, NAME)
