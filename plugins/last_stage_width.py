"""last-stage-width: keep a fraction of the last stage's channels (Huang et al., NeurIPS 2021).

Huang et al. ("Exploring Architectural Ingredients of Adversarially Robust Deep Neural Networks")
found that a narrower last stage makes wide ResNets more robust (WRN-34-R). This transform narrows
the last stage of any CNN: the stage is found with :mod:`harden.graph.stages` (the layers at the
final resolution level), and torch-pruning's dependency graph removes channels consistently from
every layer coupled to them: residual adds and concatenations, norms, squeeze-excitation gates and
the input of the layers after the stage (the classifier).

Channels are chosen per coupled group by L1 magnitude: the sum of ``|w|`` over the filters that
produce the channel (every convolution/linear layer of the group that outputs it). Grouped
convolutions keep the same channels in every group. The removed channels are recorded in the
recipe, so :meth:`LastStageWidth.replay` redoes the same surgery on a fresh model without
recomputing importance.

Networks that shuffle or split their channels, which torch-pruning does not follow (ShuffleNet's
channel shuffles and chunks, MixNet's mixed-kernel convolutions), are narrowed through
:mod:`harden.channels.flow_groups` instead: whole shuffle groups so that every chunk stays balanced, a
share of every split part; their removed filters are recorded per layer (``state["flow"]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from harden.channels.analysis import (
    coupled_groups,
    dependency_graph,
    layer_names,
    param_change,
    param_count,
    plan_removed,
)
from harden.channels.flow_groups import (
    FlowAnalysis,
    flow_analysis,
    plan_group,
    remove_classes,
    replay_removal,
)
from harden.channels.surgery import remove_channels
from harden.errors import HardenError
from harden.graph import trace_with_shapes
from harden.graph.stages import Head, Stage, find_head, find_stages, width_stages
from harden.model import HardenedModel
from harden.transforms import KEEP, Applied, Param, SearchDimension, Shorthand, Transform, parse_number

_MAX_GROUP_LINES = 10  # groups listed one per line in the changes; the rest summed up


def _ratio_problem(value: float) -> str | None:
    if not (0 < value <= 1):  # also false for NaN
        return "the fraction of channels kept must be in (0, 1], e.g. 0.5"
    return None


def find_last_stage(model: HardenedModel) -> tuple[Stage, Head]:
    """The stage whose width this transform changes, and the model's head; HardenError if none."""
    traced = trace_with_shapes(model.net, model.net_input_size())
    head = find_head(traced)
    stages = find_stages(traced, head=head)
    name = model.spec
    if not stages:
        raise HardenError(f"{name} has no convolutional stages; last-stage-width applies to CNNs")
    stage = stages[-1]
    if stage.tokens:
        raise HardenError(
            f"{name} has no convolutional stages (after {stage.convs[0]} it works on token sequences, "
            "as a vision transformer does); last-stage-width applies to CNNs")
    return stage, head


@dataclass
class _Plan:
    """One coupled group of the last stage: its root layer and the channels to remove."""

    root: str
    channels: int
    producers: list[str]
    removed: list[int]
    channel_groups: int = 1

    @property
    def kept(self) -> int:
        return self.channels - len(self.removed)


def _plan_groups(dg: Any, net: nn.Module, stage: Stage, ratio: float) -> tuple[list[_Plan], list[str]]:
    """Group the last stage's channel-mixing layers by coupling and choose the channels to remove."""
    inside = set(stage.layers)
    plans: list[_Plan] = []
    skipped: list[str] = []
    for path, channels, _group, scan in coupled_groups(dg, net, stage.layers):
        outside = [name for name in scan.producers if name not in inside]
        if outside:
            skipped.append(f"{path} ({channels} channels, coupled to {outside[0]} outside the last stage)")
            continue
        removed = plan_removed(scan, path, channels, ratio)
        if not removed:
            continue
        producers = sorted(scan.producers, key=stage.layers.index)
        plans.append(_Plan(path, channels, producers, removed, scan.channel_groups))
    return plans, skipped


def _group_lines(groups: list[tuple[str, int, int]]) -> list[str]:
    """One line per group (its line, channels before and after), the groups past the tenth summed up."""
    if len(groups) <= _MAX_GROUP_LINES + 1:
        return [line for line, _, _ in groups]
    rest = groups[_MAX_GROUP_LINES:]
    return [*(line for line, _, _ in groups[:_MAX_GROUP_LINES]),
            f"... {len(rest)} more groups: {sum(n for _, n, _ in rest)} -> {sum(k for _, _, k in rest)} "
            "channels in all"]


def _narrow(model: HardenedModel, stage: Stage, ratio: float) -> tuple[list[str], dict[str, Any]]:
    """Narrow the last stage's coupled groups on torch-pruning's dependency graph: the change lines and state."""
    net, size = model.net, model.net_input_size()
    dg = dependency_graph(net, size)
    plans, skipped = _plan_groups(dg, net, stage, ratio)
    for plan in plans:
        remove_channels(dg, net, plan.root, plan.channels, plan.removed)
    lines = []
    for plan in plans:
        grouped = f", same channels in each of {plan.channel_groups} groups" if plan.channel_groups > 1 else ""
        lines.append((f"{layer_names(plan.producers)}: {plan.channels} -> {plan.kept} channels{grouped}",
                      plan.channels, plan.kept))
    state = {"groups": [{"root": p.root, "channels": p.channels, "removed": p.removed} for p in plans]}
    return [*_group_lines(lines), *(f"kept {s}" for s in skipped)], state


def _narrow_flow(analysis: FlowAnalysis, stage: Stage, ratio: float,
                 who: str) -> tuple[list[str], dict[str, Any]]:
    """Narrow the last stage of a network with channel shuffles or splits (:mod:`harden.channels.flow_groups`)."""
    inside = set(stage.layers)
    plans, skipped = [], []
    for group in analysis.groups:
        within = [p for p in group.layers if p in inside]
        outside = [p for p in group.producers if p not in inside]
        if not within:
            continue
        if outside:
            skipped.append(f"kept {within[0]} ({len(group.classes)} channels, coupled to {outside[0]} "
                           "outside the last stage)")
            continue
        plan = plan_group(analysis, group, ratio)
        if plan.removed or plan.unit is not None:
            plans.append(plan)
    groups = remove_classes(analysis, {c for plan in plans for c in plan.removed}, who)
    lines = [(p.describe(), len(p.group.classes), len(p.group.classes) - len(p.removed)) for p in plans]
    return [*_group_lines(lines), *skipped], {"groups": groups, "flow": True}


def _in_width(layer: nn.Module) -> int | None:
    for attr in ("in_channels", "in_features"):
        if hasattr(layer, attr):
            return int(getattr(layer, attr))
    return None


class LastStageWidth(Transform):
    """Narrow the last stage of a CNN to a fraction of its channels, keeping the largest-L1 channels."""

    name = "last-stage-width"
    summary = "keep a fraction R of the last stage's channels (Huang et al. 2021, WRN-34-R)"
    params = (
        Param("ratio", parse_number, default=0.5, help="fraction of channels kept, 0 < R <= 1",
              check=_ratio_problem),
    )
    shorthands = (Shorthand("--last-stage-width", "ratio", "R", "Keep a fraction R of the last stage's channels.",
                            order=20),)
    search_order = 20

    @classmethod
    def search_dimensions(cls, model: HardenedModel, traced: Any) -> tuple[list[SearchDimension], str | None]:
        stages, note = width_stages(traced)
        if not stages:
            return [], note
        return [SearchDimension("last-stage-width", (KEEP, "0.75", "0.5"),
                                "fraction of the last stage's channels kept")], None

    @classmethod
    def search_spec(cls, params: dict[str, str]) -> str | None:
        ratio = params.get("last-stage-width", KEEP)
        return None if ratio == KEEP else f"last-stage-width:ratio={ratio}"

    def apply(self, model: HardenedModel) -> Applied:
        ratio = float(self.config["ratio"])
        stage, head = find_last_stage(model)
        changes = [f"last {stage.describe()}"]
        if ratio == 1:
            return Applied([*changes, "ratio 1: every channel is kept, nothing to do"], {"groups": []})
        net = model.net
        following = [p for p in head.layers if p not in stage.layers]
        widths = {p: _in_width(net.get_submodule(p)) for p in following}
        params_before = param_count(model)
        analysis = flow_analysis(net, model.net_input_size(), self.name)
        if analysis is None:
            lines, state = _narrow(model, stage, ratio)
        else:
            lines, state = _narrow_flow(analysis, stage, ratio, self.name)
        changes += lines
        for path, before in widths.items():
            after = _in_width(net.get_submodule(path))
            if before is not None and after != before:
                changes.append(f"{path}: input {before} -> {after}")
        if not state["groups"]:
            changes.append(f"ratio {ratio:g} removes no channel (groups too small)")
        changes.append(param_change(params_before, param_count(model)))
        return Applied(changes, state)

    def replay(self, model: HardenedModel, state: dict[str, Any]) -> None:
        groups = state.get("groups")
        if groups is None:
            raise HardenError("last-stage-width: the recipe has no recorded channel choice to replay")
        if not groups:
            return
        if state.get("flow"):
            replay_removal(model.net, model.net_input_size(), groups, self.name)
            return
        dg = dependency_graph(model.net, model.net_input_size())
        for entry in groups:
            remove_channels(dg, model.net, str(entry["root"]), int(entry["channels"]),
                            [int(i) for i in entry["removed"]])
