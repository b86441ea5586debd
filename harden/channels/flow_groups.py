"""Narrowing networks that shuffle or split their channels (on :mod:`harden.channels.flow`).

A *group* is what the width transforms narrow together: the classes of joined channels made by the
same layers, or tied by a chunk's balance (ShuffleNet: a stage's whole stream of concatenated,
shuffled and chunked channels is one group; each branch's inner channels are another). Classes are
sorted into *atoms*: classes that every chunk counts alike and that sit in the same parts of every
split into stored sizes (MixNet's mixed-kernel convolutions). An atom no chunk counts keeps its share
``round(R * n)`` (at least one: every split part keeps a convolution to feed). The atoms of a
connected set of chunks keep the same exact fraction ``t/g`` of their classes (``g`` the gcd of their
sizes, ``t = round(R * g)``), so that each chunk's parts stay equal; where ``g`` is 1 only the
fraction 1 does, and those channels stay. Each atom keeps its largest-L1 classes (the summed ``|w|``
of the filters that make them, as in :mod:`harden.channels.analysis`).

Removal uses torch-pruning's layer functions (filters, input columns, norm and depthwise channels)
and rewrites the stored split sizes; the removed filters are recorded per layer, so replay finds the
same classes on a fresh model.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from harden.channels.analysis import filter_l1, keep_count, layer_names
from harden.channels.flow import CONV, ChannelFlow, FlowError, Slot, follow
from harden.errors import HardenError
from harden.graph.channel_ops import find_channel_ops
from harden.graph.tracing import trace_with_shapes


@dataclass
class FlowGroup:
    """Classes narrowed together: made by the same layers or counted by the same chunks."""

    classes: list[int]
    producers: list[str]  # the layers whose filters make its channels, in graph order
    layers: list[str]     # the layers that make or carry its channels (filters, norms, depthwise convs)


@dataclass
class FlowAnalysis:
    """The classes of a network's channels, their layer places, importance, balances and groups."""

    flow: ChannelFlow
    members: dict[int, list[Slot]]
    fixed: set[int]                         # classes that stay: the input's, the outputs', filterless ones
    coefs: dict[int, dict[int, int]]        # class -> balance -> count in the first part minus another
    parts: dict[int, tuple[tuple[int, int], ...]]  # class -> the (cut, part) places it has
    importance: dict[int, float]
    groups: list[FlowGroup] = field(default_factory=list)


@dataclass
class FlowPlan:
    """The classes of a group to remove, and the fraction its chunked atoms keep (t of every g)."""

    group: FlowGroup
    removed: set[int]
    unit: tuple[int, int] | None = None
    parts: int = 0  # split parts (of stored sizes) that each keep their own share

    def describe(self) -> str:
        n = len(self.group.classes)
        line = f"{layer_names(self.group.producers)}: {n} -> {n - len(self.removed)} channels"
        if self.parts:
            line += f", a share of each of {self.parts} split parts"
        if self.unit is not None and self.unit[1] > 1:
            line += (f" (in whole shuffle groups: {self.unit[0]} of every {self.unit[1]}, so that every chunk "
                     "stays balanced)")
        elif self.unit is not None:
            line += " (all kept: no narrower width keeps its chunks and channel shuffles balanced)"
        return line


def flow_analysis(net: nn.Module, input_size: tuple[int, ...], who: str) -> FlowAnalysis | None:
    """The channel flow of ``net`` when it has a channel shuffle or split (None otherwise: torch-pruning's
    dependency graph handles it); a HardenError naming ``who`` where the flow cannot be followed."""
    traced = trace_with_shapes(net, input_size)
    ops = find_channel_ops(traced)
    if not ops:
        return None
    try:
        flow = follow(traced, net)
    except FlowError as exc:
        raise HardenError(f"{who} cannot change the widths of this model: its channels pass through {exc}, "
                          "which channel removal cannot keep consistent; use transforms that keep the widths "
                          "instead (upsample, stride-mod, strides, activation)") from None
    return analyse(flow)


def analyse(flow: ChannelFlow) -> FlowAnalysis:
    members: dict[int, list[Slot]] = {}
    for cls, ids in flow.classes().items():
        members[cls] = [s for s in (flow.slots[i] for i in ids) if s is not None]
    fixed = {flow.find(i) for i in flow.fixed}
    fixed |= {c for c, slots in members.items() if not any(s.kind == "out" for s in slots)}
    parts: dict[int, set[tuple[int, int]]] = {}
    for n, (_, cut) in enumerate(flow.cuts):
        for k, part in enumerate(cut):
            for i in part:
                parts.setdefault(flow.find(i), set()).add((n, k))
    analysis = FlowAnalysis(flow, members, fixed, _balance_coefs(flow), {c: tuple(sorted(p)) for c, p in parts.items()},
                            _importance(flow, members))
    analysis.groups = _groups(analysis)
    return analysis


def _balance_coefs(flow: ChannelFlow) -> dict[int, dict[int, int]]:
    coefs: dict[int, dict[int, int]] = {}
    index = 0
    for parts in flow.balances:
        counts = [Counter(flow.find(i) for i in part) for part in parts]
        for other in counts[1:]:
            for cls in set(counts[0]) | set(other):
                if counts[0][cls] != other[cls]:
                    coefs.setdefault(cls, {})[index] = counts[0][cls] - other[cls]
            index += 1
    return coefs


def _importance(flow: ChannelFlow, members: dict[int, list[Slot]]) -> dict[int, float]:
    l1 = {}
    for path, layer in flow.layers.items():
        if isinstance(layer, (CONV, nn.Linear)):
            width = layer.out_channels if isinstance(layer, CONV) else layer.out_features
            l1[path] = filter_l1(layer, list(range(width)))
    return {c: sum(float(l1[s.layer][s.index]) for s in slots if s.kind == "out" and l1.get(s.layer) is not None)
            for c, slots in members.items()}


def _components(links: Iterable[Iterable[int]]) -> dict[int, int]:
    """Item -> smallest item of its connected component, for items linked by sharing a link."""
    parent: dict[int, int] = {}

    def find(i: int) -> int:
        while parent.setdefault(i, i) != i:
            i = parent[i]
        return i

    for link in links:
        items = list(link)
        for i in items:
            a, b = find(items[0]), find(i)
            parent[max(a, b)] = min(a, b)
    return {i: find(i) for i in parent}


def _groups(analysis: FlowAnalysis) -> list[FlowGroup]:
    order = {path: n for n, path in enumerate(analysis.flow.layers)}
    made_by: dict[str, list[int]] = {}
    counted: dict[int, list[int]] = {}
    for cls, slots in analysis.members.items():
        for s in slots:
            if s.kind == "out":
                made_by.setdefault(s.layer, []).append(cls)
        for balance in analysis.coefs.get(cls, {}):
            counted.setdefault(balance, []).append(cls)
    component = _components([*made_by.values(), *counted.values(), *([c] for c in analysis.members)])
    found: dict[int, list[int]] = {}
    for cls in analysis.members:
        found.setdefault(component[cls], []).append(cls)

    def first_filter(cls: int) -> tuple[int, int]:
        return min(((order[s.layer], s.index) for s in analysis.members[cls] if s.kind == "out"),
                   default=(len(order), cls))

    groups = []
    for classes in found.values():
        if all(c in analysis.fixed for c in classes):
            continue
        classes.sort(key=first_filter)
        producers = sorted({s.layer for c in classes for s in analysis.members[c] if s.kind == "out"},
                           key=order.__getitem__)
        layers = sorted({s.layer for c in classes for s in analysis.members[c] if s.kind != "in"},
                        key=order.__getitem__)
        groups.append(FlowGroup(classes, producers, layers))
    groups.sort(key=lambda g: first_filter(g.classes[0]))
    return groups


def _fixed_closure(analysis: FlowAnalysis, classes: list[int]) -> set[int]:
    """The classes of a group that stay: fixed ones, and every class a chunk counts with one of them."""
    fixed = {c for c in classes if c in analysis.fixed}
    while True:
        balances = {b for c in fixed for b in analysis.coefs.get(c, {})}
        more = {c for c in classes if c not in fixed and balances & set(analysis.coefs.get(c, {}))}
        if not more:
            return fixed
        fixed |= more


def _largest(analysis: FlowAnalysis, classes: list[int], keep: int) -> list[int]:
    scores = torch.tensor([analysis.importance[c] for c in classes], dtype=torch.float64)
    order = torch.argsort(scores, descending=True, stable=True)[:keep].tolist()
    return [classes[i] for i in order]


def plan_group(analysis: FlowAnalysis, group: FlowGroup, ratio: float) -> FlowPlan:
    """Which classes of ``group`` to remove so that it keeps about ``ratio`` of them (module docstring)."""
    kept = _fixed_closure(analysis, group.classes)
    atoms: dict[tuple[Any, ...], list[int]] = {}
    for c in group.classes:
        if c not in kept:
            key = (tuple(sorted(analysis.coefs.get(c, {}).items())), analysis.parts.get(c, ()))
            atoms.setdefault(key, []).append(c)
    free = [key for key in atoms if not key[0]]  # no chunk counts them: each keeps its own share
    for key in free:
        kept.update(_largest(analysis, atoms[key], keep_count(ratio, len(atoms[key]))))
    keys = [key for key in atoms if key[0]]
    linked = _components([[n for n, k in enumerate(keys) if any(b == balance for b, _ in k[0])]
                          for balance in {b for k in keys for b, _ in k[0]}])
    unit = None
    for root in sorted(set(linked.values())):
        members = [atoms[keys[i]] for i in linked if linked[i] == root]
        g = math.gcd(*(len(m) for m in members))
        t = keep_count(ratio, g)
        for m in members:
            kept.update(_largest(analysis, m, len(m) * t // g))
        unit = unit or (t, g)
    parts = len({key[1] for key in free})
    return FlowPlan(group, {c for c in group.classes if c not in kept}, unit, parts if parts > 1 else 0)


def _width(layer: nn.Module, kind: str) -> int:
    if isinstance(layer, nn.Linear):
        return int(layer.out_features if kind == "out" else layer.in_features)
    if isinstance(layer, CONV):
        return int(layer.in_channels if kind == "in" else layer.out_channels)
    return int(layer.num_features)


def _cut(layer: nn.Module, kind: str, idxs: list[int]) -> None:
    import torch_pruning as tp

    if isinstance(layer, CONV):
        fns: dict[str, Any] = {"out": tp.prune_conv_out_channels, "in": tp.prune_conv_in_channels,
                               "chan": tp.prune_depthwise_conv_out_channels}
    elif isinstance(layer, nn.Linear):
        fns = {"out": tp.prune_linear_out_channels, "in": tp.prune_linear_in_channels}
    else:
        fns = {"chan": tp.prune_batchnorm_out_channels}
    fns[kind](layer, idxs)


def remove_classes(analysis: FlowAnalysis, removed: set[int], who: str) -> list[dict[str, Any]]:
    """Remove the classes ``removed`` from every layer place they have (all checked first); the state
    that replays it (:func:`removed_filters`)."""
    state = removed_filters(analysis, removed)
    cuts: dict[tuple[str, str], set[int]] = {}
    for cls in removed:
        for s in analysis.members[cls]:
            cuts.setdefault((s.layer, s.kind), set()).add(s.index)
    for (path, kind), idxs in cuts.items():
        if len(idxs) >= _width(analysis.flow.layers[path], kind):
            raise HardenError(f"{who}: removing these channels would leave {path} without channels")
    sizes = {path: [sum(analysis.flow.find(i) not in removed for i in part) for part in parts]
             for path, parts in analysis.flow.cuts}
    for (path, kind), idxs in cuts.items():
        _cut(analysis.flow.layers[path], kind, sorted(idxs))
    for path, new in sizes.items():  # the sizes a split-conv module reads: its parts' new widths
        module = analysis.flow.splitters[path]
        module.splits = new
        if isinstance(getattr(module, "in_channels", None), int):
            module.in_channels = sum(new)
        if isinstance(getattr(module, "out_channels", None), int):
            module.out_channels = sum(int(c.out_channels) for c in module.children())
    return state


def removed_filters(analysis: FlowAnalysis, removed: set[int]) -> list[dict[str, Any]]:
    """The state to replay a removal (before it): per layer whose filters go, its width and those filters."""
    per_layer: dict[str, list[int]] = {}
    for cls in removed:
        for s in analysis.members[cls]:
            if s.kind == "out":
                per_layer.setdefault(s.layer, []).append(s.index)
    return [{"root": path, "channels": _width(layer, "out"), "removed": sorted(per_layer[path])}
            for path, layer in analysis.flow.layers.items() if path in per_layer]


def recorded_classes(analysis: FlowAnalysis, entries: list[dict[str, Any]], who: str) -> set[int]:
    """The classes whose filters a recorded state removes (see :func:`removed_filters`)."""
    owner = {(s.layer, s.index): c for c, slots in analysis.members.items() for s in slots if s.kind == "out"}
    filters = {(str(e["root"]), int(i)) for e in entries for i in e["removed"]}
    for e in entries:
        layer = analysis.flow.layers.get(str(e["root"]))
        if layer is None or not isinstance(layer, (CONV, nn.Linear)) or _width(layer, "out") != int(e["channels"]):
            raise HardenError(f"{who}: layer '{e['root']}' does not have the {e['channels']} output channels "
                              "the recorded state expects; the state does not fit this model")
    classes = {owner[f] for f in filters if f in owner}
    whole = all((s.layer, s.index) in filters for c in classes for s in analysis.members[c] if s.kind == "out")
    if not filters <= owner.keys() or not whole or classes & analysis.fixed:
        raise HardenError(f"{who}: the recorded channels do not form whole channel classes of this model; "
                          "the state does not fit this model")
    return classes


def replay_removal(net: nn.Module, input_size: tuple[int, ...], entries: list[dict[str, Any]], who: str) -> None:
    """Redo a removal recorded by :func:`removed_filters` on a freshly built network."""
    analysis = flow_analysis(net, input_size, who)
    if analysis is None:
        raise HardenError(f"{who}: the recorded state narrows channel shuffles or splits that this model "
                          "does not have; the state does not fit this model")
    remove_classes(analysis, recorded_classes(analysis, entries, who), who)
