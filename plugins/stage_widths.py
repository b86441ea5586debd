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
- Growing (factor > 1) is written here, as torch-pruning has no expand operation: existing weights stay
  where they are, new output filters get a small random init (1e-2 times the spread of the layer's
  existing weights), new input columns of existing filters are zero, new norm channels start as a fresh
  norm layer (gamma 1, beta 0, running mean 0, variance 1). As no new channel reaches an old one except
  through a zero column, the widened network computes the same function as before (exactly, up to
  floating-point summation order, for batch norm networks; GroupNorm gets whole new groups; a LayerNorm
  over channels also normalises over the new channels, so its outputs change). Replay only needs the
  new sizes: the weights come from the file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from harden.channels import (
    CONV,
    choose_removed,
    coupled_groups,
    dependency_graph,
    keep_count,
    param_count,
    remove_channels,
)
from harden.errors import HardenError, UsageError
from harden.graph import trace_with_shapes
from harden.graph.stages import Stage, feature_nodes, find_head, find_stages, is_residual
from harden.graph.tracing import TracedNet
from harden.model import HardenedModel
from harden.transforms import Applied, Param, Transform

NAME = "stage-widths"
NEW_FILTER_SCALE = 1e-2  # new output filters: this times the standard deviation of the layer's weights
_SEPARATOR = re.compile(r"[/xX]")
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
# torch-pruning's placeholder ops that need no change when channels are added (a concatenation's
# offsets show in the index ranges of the layers after it; this module does not reuse the graph after
# widening).
_PASSIVE_OPS = ("_ElementWiseOp", "_ReshapeOp", "_OutputOp", "_ConcatOp")


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


@dataclass
class _Plan:
    """One coupled group: its root layer, its channel count now and after."""

    root: str
    channels: int
    new: int
    kept: list[int] | None = None  # shrinking: the channels kept


def _plan(dg: Any, net: nn.Module, body: Sequence[Stage], stem: set[str],
          factors: Sequence[float]) -> list[_Plan]:
    """One plan per coupled group whose width changes, in stage order."""
    owner = {p: i for i, s in enumerate(body) for p in s.layers if p not in stem}
    plans: list[_Plan] = []
    for path, channels, group, scan in coupled_groups(dg, net, [p for stage in body for p in stage.layers]):
        owners = sorted({owner[p] for p in scan.producers if p in owner})
        if not owners:
            continue  # the stem's channels (or a group of the head)
        if len({factors[i] for i in owners}) > 1:
            named = ", ".join(f"stage {body[i].index} (x{_format_factor(factors[i])})" for i in owners)
            raise UsageError(f"{NAME}: the channels of {path} are shared by {named} through residual "
                             "adds or concatenations; give these stages the same factor")
        factor = factors[owners[0]]
        if factor == 1:
            continue
        plan = _plan_group(path, channels, factor, scan, group, dg)
        if plan is not None:
            plans.append(plan)
    return plans


def _plan_group(path: str, channels: int, factor: float, scan: Any, group: Any, dg: Any) -> _Plan | None:
    """Shrinking: keep the largest-L1 channels (the same in every channel group); growing: the new width."""
    ch_groups, unit = (scan.channel_groups, 1) if factor < 1 else _growth_layout(dg, group, path)
    if channels % ch_groups:
        raise HardenError(f"{path}: {channels} channels do not split into {ch_groups} equal channel groups")
    per_group = channels // ch_groups
    if factor < 1:
        keep = keep_count(factor, per_group)
        if keep == per_group:
            return None
        removed = set(choose_removed(scan.importance(), ch_groups, keep))
        kept = [i for i in range(channels) if i not in removed]
        return _Plan(path, channels, keep * ch_groups, kept)
    new_per_group = max(per_group, math.floor(factor * per_group / unit + 0.5) * unit)
    if new_per_group == per_group:
        return None
    return _Plan(path, channels, new_per_group * ch_groups)


def _is_depthwise(layer: nn.Module) -> bool:
    return (isinstance(layer, CONV) and layer.groups > 1
            and layer.groups == layer.in_channels == layer.out_channels)


def _growth_layout(dg: Any, group: Any, path: str) -> tuple[int, int]:
    """How the channels of a growing group are laid out: the number of channel groups (grouped
    convolutions keep their group count and grow every group alike) and the multiple that the new
    width must be of (a GroupNorm's channels per group: it gets whole new groups)."""
    ch_groups, unit = 1, 1
    for item in group:
        target = item.dep.target.module
        if isinstance(target, CONV) and target.groups > 1 and not _is_depthwise(target):
            ch_groups = max(ch_groups, int(target.groups))
        elif isinstance(target, nn.GroupNorm):
            per = target.num_channels // target.num_groups
            unit = unit * per // math.gcd(unit, per)
    if ch_groups > 1 and unit > 1:
        raise HardenError(f"{NAME} cannot widen the channels of {path}: they feed both a grouped convolution "
                          "and a GroupNorm, whose new channels would have to be laid out differently")
    return ch_groups, unit


# ------------------------------------------------------------------------------------------- growth


@dataclass
class _Block:
    """The range of one layer dimension that a growing group covers: ``n`` channels from ``start``,
    each ``k`` wide (k > 1 after a flatten), growing to ``m``; ``layout[r]`` is the new place of
    channel r."""

    start: int
    n: int
    k: int
    m: int
    layout: torch.Tensor


@dataclass
class _Resize:
    """A layer (or a bare parameter) of the growing groups and the ranges of its dimensions that grow
    (``out``, ``in``, ``chan`` for norms, the pruning dimension's index for a bare parameter)."""

    target: nn.Module | nn.Parameter
    name: str
    blocks: dict[str | int, list[_Block]] = field(default_factory=dict)


def _layout(channels: int, new: int, ch_groups: int) -> torch.Tensor:
    """New position of every old channel: each of ``ch_groups`` groups keeps its channels first."""
    old = torch.arange(channels)
    per_old, per_new = channels // ch_groups, new // ch_groups
    return (old // per_old) * per_new + old % per_old


def _dims(layer: nn.Module, out: bool, name: str) -> str:
    """Which dimension of ``layer`` a group item resizes; HardenError for unsupported layers."""
    if isinstance(layer, CONV) and not layer.transposed:
        return "out" if out or _is_depthwise(layer) else "in"
    if isinstance(layer, nn.Linear):
        return "out" if out else "in"
    if _is_channel_norm(layer):
        return "chan"
    raise HardenError(f"{NAME} cannot widen {name} ({type(layer).__name__}): only Conv, Linear, BatchNorm, "
                      "GroupNorm and LayerNorm layers can grow; use factors <= 1 for this stage")


def _is_channel_norm(layer: nn.Module) -> bool:
    """A norm layer with one entry per channel (a LayerNorm only when it normalises over channels)."""
    if isinstance(layer, nn.LayerNorm):
        return len(layer.normalized_shape) == 1
    return isinstance(layer, _NORMS)


def _dim_size(layer: nn.Module, dim: str) -> int:
    if dim == "out":
        return int(layer.out_channels if isinstance(layer, CONV) else layer.out_features)
    if dim == "in":
        return int(layer.in_channels if isinstance(layer, CONV) else layer.in_features)
    if isinstance(layer, nn.GroupNorm):
        return int(layer.num_channels)
    if isinstance(layer, nn.LayerNorm):
        return int(layer.normalized_shape[0])
    return int(layer.num_features)


def _block(name: str, idxs: list[int], roots: list[int | None], plan: _Plan, layout: torch.Tensor) -> _Block:
    n = plan.channels
    k = len(idxs) // n
    start = min(idxs)
    order = sorted(zip(idxs, roots))
    if k * n != len(idxs) or [i for i, _ in order] != list(range(start, start + k * n)) or any(
            r != (i - start) // k for i, r in order):
        raise HardenError(f"{NAME} cannot widen {name}: it takes the channels of {plan.root} in a layout "
                          "other than a plain range (a split, slice or repeat of the feature map)")
    return _Block(start, n, k, plan.new, layout)


_OP_NAMES = {"_SplitOp": "split/chunk", "_SliceOp": "slice", "_UnbindOp": "unbind", "_ExpandOp": "expand"}


def _collect(dg: Any, net: nn.Module, plans: Sequence[_Plan]) -> list[_Resize]:
    """For every layer of the growing groups, the ranges of its dimensions that grow."""
    paths: dict[Any, str] = {m: n for n, m in net.named_modules()}
    params = {id(p): n for n, p in net.named_parameters()}
    resizes: dict[int, _Resize] = {}
    for plan in plans:
        layer = _root_layer(dg, net, plan)
        pruner = dg.get_pruner_of_module(layer)
        group = dg.get_pruning_group(layer, pruner.prune_out_channels, list(range(plan.channels)))
        ch_groups, _ = _growth_layout(dg, group, plan.root)
        layout = _layout(plan.channels, plan.new, ch_groups)
        seen: set[tuple[int, str | int]] = set()
        for item in group:
            target = item.dep.target.module
            dim: str | int
            if isinstance(target, nn.Parameter) and id(target) in params:
                name = params[id(target)]
                dim = int(dg.module2node[target].pruning_dim) % target.dim()
            elif isinstance(target, nn.Module) and target in paths:
                name = paths[target]
                dim = _dims(target, dg.is_out_channel_pruning_fn(item.dep.handler), name)
            elif type(target).__name__ in _PASSIVE_OPS:
                continue
            else:
                what = _OP_NAMES.get(type(target).__name__, type(target).__name__)
                raise HardenError(f"{NAME} cannot widen the channels of {plan.root}: they pass through a "
                                  f"{what} operation; use factors <= 1 for this stage")
            if (id(target), dim) in seen:
                continue  # a depthwise conv seen from both its sides
            seen.add((id(target), dim))
            block = _block(name, list(item.idxs), list(item.root_idxs), plan, layout)
            resizes.setdefault(id(target), _Resize(target, name)).blocks.setdefault(dim, []).append(block)
    return list(resizes.values())


def _root_layer(dg: Any, net: nn.Module, plan: _Plan) -> nn.Module:
    try:
        layer = net.get_submodule(plan.root)
    except AttributeError:
        raise HardenError(f"{NAME}: layer '{plan.root}' is missing; the recorded state does not fit "
                          "this model") from None
    pruner = dg.get_pruner_of_module(layer) if layer in dg.module2node else None
    if pruner is None or pruner.get_out_channels(layer) != plan.channels:
        raise HardenError(f"{NAME}: layer '{plan.root}' does not have the {plan.channels} output channels "
                          "the recorded state expects; the state does not fit this model")
    return layer


def _position_map(name: str, size: int, blocks: list[_Block]) -> tuple[torch.Tensor, int]:
    """The new index of every old index of a dimension of ``size``, and its new size."""
    positions = torch.empty(size, dtype=torch.long)
    shift = cursor = 0
    for b in sorted(blocks, key=lambda b: b.start):
        end = b.start + b.n * b.k
        if b.start < cursor or end > size:
            raise HardenError(f"{NAME} cannot widen {name}: its coupled channel ranges overlap")
        positions[cursor:b.start] = torch.arange(cursor, b.start) + shift
        old = torch.arange(b.n * b.k)
        positions[b.start:end] = b.start + shift + b.layout[old // b.k] * b.k + old % b.k
        shift += (b.m - b.n) * b.k
        cursor = end
    positions[cursor:] = torch.arange(cursor, size) + shift
    return positions, size + shift


def _new_filters(weight: torch.Tensor, shape: Sequence[int], gen: torch.Generator) -> torch.Tensor:
    spread = float(weight.detach().float().std()) if weight.numel() > 1 else 0.0
    if not math.isfinite(spread) or spread == 0:
        spread = 1.0 / math.sqrt(max(1, math.prod(shape[1:])))
    noise = torch.randn(*shape, generator=gen) * (NEW_FILTER_SCALE * spread)
    return noise.to(device=weight.device, dtype=weight.dtype)


def _param(old: torch.Tensor, value: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(value, requires_grad=old.requires_grad)


def _grow_vector(old: torch.Tensor, positions: torch.Tensor, size: int, fill: float) -> torch.Tensor:
    new = torch.full((size, *old.shape[1:]), fill, dtype=old.dtype, device=old.device)
    new[positions.to(old.device)] = old.detach()
    return new


def _grow_mixing(layer: nn.Module, name: str, maps: dict[str, tuple[torch.Tensor, int]],
                 gen: torch.Generator) -> None:
    """Resize a conv/linear layer: old weights in their new places, new filters small, new inputs zero."""
    conv = isinstance(layer, CONV)
    w = layer.weight
    out_old, in_old = _dim_size(layer, "out"), _dim_size(layer, "in")
    out_pos, out_new = maps.get("out", (torch.arange(out_old), out_old))
    in_pos, in_new = maps.get("in", (torch.arange(in_old), in_old))
    depthwise = _is_depthwise(layer)
    if depthwise:
        in_pos, in_new = out_pos, out_new
    groups = int(layer.groups) if conv else 1
    new_groups = out_new if depthwise else groups
    if out_new % new_groups or in_new % new_groups:
        raise HardenError(f"{NAME} cannot widen {name}: {in_new} inputs and {out_new} outputs do not split "
                          f"into its {new_groups} groups")
    shape = (out_new, in_new // new_groups, *w.shape[2:])
    new = torch.zeros(shape, dtype=w.dtype, device=w.device)
    fresh = torch.ones(out_new, dtype=torch.bool)
    fresh[out_pos] = False
    fresh_rows = fresh.nonzero().flatten()
    if len(fresh_rows):
        new.index_copy_(0, fresh_rows.to(w.device), _new_filters(w, (len(fresh_rows), *shape[1:]), gen))
    if depthwise or groups == 1:
        old = w.detach()
        if not depthwise and in_new != in_old:  # old filters: zero columns for the new inputs
            old = torch.zeros((out_old, *shape[1:]), dtype=w.dtype, device=w.device).index_copy_(
                1, in_pos.to(w.device), old)
        new.index_copy_(0, out_pos.to(w.device), old)
    else:
        rows = out_pos.view(-1, 1)
        per_in_old, per_in_new = in_old // groups, in_new // groups
        col = torch.arange(per_in_old).view(1, -1)
        channel = (torch.arange(out_old) // (out_old // groups)).view(-1, 1) * per_in_old + col
        cols = in_pos[channel] - (rows // (out_new // groups)) * per_in_new
        if bool((cols < 0).any() or (cols >= per_in_new).any()):
            raise HardenError(f"{NAME} cannot widen {name}: its new inputs would move between its "
                              f"{groups} groups")
        new[rows.to(w.device), cols.to(w.device)] = w.detach()
    layer.weight = _param(w, new)
    if layer.bias is not None:
        layer.bias = _param(layer.bias, _grow_vector(layer.bias, out_pos, out_new, 0.0))
    if conv:
        layer.out_channels, layer.in_channels, layer.groups = out_new, in_new, new_groups
    else:
        layer.out_features, layer.in_features = out_new, in_new


def _grow_norm(layer: nn.Module, name: str, positions: torch.Tensor, size: int) -> None:
    """Resize a norm layer: old channels in their new places, new ones as in a fresh layer."""
    if isinstance(layer, nn.GroupNorm):
        per = layer.num_channels // layer.num_groups
        grouped = positions.view(-1, per)
        fresh = torch.ones(size, dtype=torch.bool)
        fresh[positions] = False
        if bool((grouped[:, 0] % per != 0).any() or (grouped - grouped[:, :1] != torch.arange(per)).any()
                or fresh.view(-1, per).any(1).ne(fresh.view(-1, per).all(1)).any()):
            raise HardenError(f"{NAME} cannot widen {name}: its new channels do not form whole GroupNorm "
                              "groups")
        layer.num_groups, layer.num_channels = size // per, size
    elif isinstance(layer, nn.LayerNorm):
        layer.normalized_shape = (size,)
    else:
        layer.num_features = size
    if getattr(layer, "weight", None) is not None:
        layer.weight = _param(layer.weight, _grow_vector(layer.weight, positions, size, 1.0))
    if getattr(layer, "bias", None) is not None:
        layer.bias = _param(layer.bias, _grow_vector(layer.bias, positions, size, 0.0))
    if getattr(layer, "running_mean", None) is not None:
        layer.running_mean = _grow_vector(layer.running_mean, positions, size, 0.0)
    if getattr(layer, "running_var", None) is not None:
        layer.running_var = _grow_vector(layer.running_var, positions, size, 1.0)


def _grow_parameter(net: nn.Module, name: str, param: nn.Parameter, dim: int, positions: torch.Tensor,
                    size: int) -> None:
    """Resize a bare per-channel parameter (a layer scale): new entries get the mean of the old ones."""
    shape = list(param.shape)
    shape[dim] = size
    new = torch.full(shape, float(param.detach().float().mean()), dtype=param.dtype, device=param.device)
    new.index_copy_(dim, positions.to(param.device), param.detach())
    owner, _, attr = name.rpartition(".")
    setattr(net.get_submodule(owner) if owner else net, attr, _param(param, new))


def _grow(dg: Any, net: nn.Module, plans: Sequence[_Plan], seed: int = 0) -> None:
    """Widen every group of ``plans`` (all planned on the current graph, then every layer resized once)."""
    if not plans:
        return
    gen = torch.Generator().manual_seed(seed)
    for resize in _collect(dg, net, plans):
        target, name = resize.target, resize.name
        if isinstance(target, nn.Parameter):
            for dim, blocks in resize.blocks.items():
                assert isinstance(dim, int)
                _grow_parameter(net, name, target, dim, *_position_map(name, target.shape[dim], blocks))
            continue
        maps = {dim: _position_map(name, _dim_size(target, str(dim)), blocks)
                for dim, blocks in resize.blocks.items()}
        if "chan" in maps:
            _grow_norm(target, name, *maps["chan"])
        else:
            _grow_mixing(target, name, maps, gen)


# ------------------------------------------------------------------------------------------ reports


def _widths(net: nn.Module) -> dict[str, tuple[int | None, int | None]]:
    """(in, out) widths of the conv/linear layers and the channel count of the norms."""
    found: dict[str, tuple[int | None, int | None]] = {}
    for name, m in net.named_modules():
        if isinstance(m, CONV):
            found[name] = (int(m.in_channels), int(m.out_channels))
        elif isinstance(m, nn.Linear):
            found[name] = (int(m.in_features), int(m.out_features))
        elif _is_channel_norm(m):
            found[name] = (None, _dim_size(m, "chan"))
    return found


def _change_lines(before: dict[str, tuple[int | None, int | None]],
                  after: dict[str, tuple[int | None, int | None]]) -> list[str]:
    lines = []
    for name, (in_b, out_b) in before.items():
        in_a, out_a = after.get(name, (in_b, out_b))
        parts = []
        if in_b is not None and in_a != in_b:
            how = "new input columns zero" if in_a > in_b else f"{in_b - in_a} inputs removed"
            parts.append(f"in {in_b} -> {in_a} ({how})")
        if out_a != out_b:
            if in_b is None:
                what = f"{out_a - out_b} new, gamma 1 beta 0" if out_a > out_b else f"{out_b - out_a} removed"
                parts.append(f"{out_b} -> {out_a} channels ({what})")
            else:
                what = f"{out_a - out_b} new filters" if out_a > out_b else f"{out_b - out_a} filters removed"
                parts.append(f"out {out_b} -> {out_a} ({what})")
        if parts:
            lines.append(f"{name}: {', '.join(parts)}")
    return lines


def _layer_names(names: list[str]) -> str:
    if len(names) <= 3:
        return ", ".join(names)
    return f"{names[0]}, {names[1]}, ... {names[-1]} ({len(names)} layers)"


def _output_layer(net: nn.Module, stage: Stage) -> str | None:
    """The last layer of ``stage`` whose width is the stage's output width (to report it after)."""
    for path in reversed(stage.layers):
        layer = net.get_submodule(path)
        if isinstance(layer, (CONV, nn.Linear)):
            width = _dim_size(layer, "out")
        elif _is_channel_norm(layer):
            width = _dim_size(layer, "chan")
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
        before, params_before = _widths(net), param_count(net)
        outputs = [_output_layer(net, s) for s in body]
        dg = dependency_graph(net, model.net_input_size(), NAME)
        plans = _plan(dg, net, body, stem, factors)
        shrink = [p for p in plans if p.kept is not None]
        grow = [p for p in plans if p.kept is None]
        for p in shrink:
            kept = set(p.kept or [])
            remove_channels(dg, net, p.root, p.channels, [i for i in range(p.channels) if i not in kept], who=NAME,
                            input_size=model.net_input_size())
        _grow(dg, net, grow)
        after = _widths(net)
        changes = []
        for s, f, path in zip(body, factors, outputs):
            width = f", {before[path][1]} -> {after[path][1]} channels" if path is not None else ""
            changes.append(f"{s.describe()}: x{_format_factor(f)}{width}")
        changes += _change_lines(before, after)
        if not plans:
            changes.append("the factors change no channel count (groups too small)")
        norms = [n for n, m in net.named_modules()
                 if isinstance(m, nn.LayerNorm) and n in before and after[n][1] > before[n][1]]
        if norms:
            changes.append(f"note: {_layer_names(norms)} normalise over the new channels too, so the outputs "
                           "change (fine-tune after widening)")
        params_after = param_count(net)
        changes.append(f"parameters {params_before:,} -> {params_after:,} "
                       f"({100 * (params_after - params_before) / max(params_before, 1):+.1f}%)")
        state = {
            "shrink": [{"root": p.root, "channels": p.channels, "kept": p.kept} for p in shrink],
            "grow": [{"root": p.root, "channels": p.channels, "new": p.new} for p in grow],
        }
        return Applied(changes, state)

    def replay(self, model: HardenedModel, state: dict[str, Any]) -> None:
        if "shrink" not in state or "grow" not in state:
            raise HardenError(f"{NAME}: the recipe has no recorded channel changes to replay")
        if not state["shrink"] and not state["grow"]:
            return
        net = model.net
        dg = dependency_graph(net, model.net_input_size(), NAME)
        for entry in state["shrink"]:
            channels = int(entry["channels"])
            kept = {int(i) for i in entry["kept"]}
            removed = [i for i in range(channels) if i not in kept]
            remove_channels(dg, net, str(entry["root"]), channels, removed, who=NAME)
        _grow(dg, net, [_Plan(str(e["root"]), int(e["channels"]), int(e["new"])) for e in state["grow"]])
