"""Channel growth on torch-pruning's dependency graph: widening coupled channel groups in place.

torch-pruning removes channels (:mod:`~harden.channels.surgery`) but has no expand operation, so growth
is written here. Existing weights stay where they are; new output filters get a small random init
(:data:`NEW_FILTER_SCALE` times the spread of the layer's existing weights); new input columns of
existing filters are zero; new norm channels start as in a fresh norm layer (gamma 1, beta 0,
running mean 0, variance 1); a bare per-channel parameter (a layer scale) gets the mean of its old
entries. As no new channel reaches an old one except through a zero column, the widened network
computes the same function as before (up to floating-point summation order; a LayerNorm over
channels also normalises over the new channels, so its outputs change).

Grouped convolutions keep their group count and grow every group alike; a GroupNorm gets whole
new groups. Layers of other kinds, and splits, slices or repeats of a growing feature map, are
refused with a one-line error naming the transform (``who``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from harden.channels.analysis import CONV, GroupScan, is_channel_norm, layer_width, plan_removed
from harden.channels.surgery import root_layer
from harden.errors import HardenError

NEW_FILTER_SCALE = 1e-2  # new output filters: this times the standard deviation of the layer's weights
# torch-pruning's placeholder ops that need no change when channels are added (a concatenation's
# offsets show in the index ranges of the layers after it; this module does not reuse the graph after
# widening).
_PASSIVE_OPS = ("_ElementWiseOp", "_ReshapeOp", "_OutputOp", "_ConcatOp")


class _CannotGrow(Exception):
    """Growth stops here; the public functions put the transform's name in front of the message."""


@dataclass
class ChannelPlan:
    """One coupled group: its root layer, its channel count now and after."""

    root: str
    channels: int
    new: int
    kept: list[int] | None = None  # shrinking: the channels kept


def plan_resize(dg: Any, group: Any, scan: GroupScan, path: str, channels: int, factor: float,
                who: str) -> ChannelPlan | None:
    """How the coupled group rooted at ``path`` changes by ``factor`` (None if its width stays).

    Shrinking keeps the largest-L1 channels (the same offsets in every channel group); growing
    rounds the new width to the group's layout (its channel groups, and a GroupNorm's group size).
    """
    try:
        return _plan(path, channels, factor, scan, group, dg)
    except _CannotGrow as exc:
        raise HardenError(f"{who} {exc}") from None


def grow_channels(dg: Any, net: nn.Module, plans: Sequence[ChannelPlan], who: str, seed: int = 0) -> None:
    """Widen every group of ``plans`` (all planned on the current graph, then every layer resized once).

    ``who`` names the transform in error messages; ``seed`` seeds the new filters.
    """
    try:
        _grow(dg, net, plans, who, seed)
    except _CannotGrow as exc:
        raise HardenError(f"{who} {exc}") from None


def _plan(path: str, channels: int, factor: float, scan: GroupScan, group: Any, dg: Any) -> ChannelPlan | None:
    if factor < 1:
        removed = set(plan_removed(scan, path, channels, factor))
        if not removed:
            return None
        kept = [i for i in range(channels) if i not in removed]
        return ChannelPlan(path, channels, len(kept), kept)
    ch_groups, unit = _growth_layout(dg, group, path)
    if channels % ch_groups:
        raise HardenError(f"{path}: {channels} channels do not split into {ch_groups} equal channel groups")
    per_group = channels // ch_groups
    new_per_group = max(per_group, math.floor(factor * per_group / unit + 0.5) * unit)
    if new_per_group == per_group:
        return None
    return ChannelPlan(path, channels, new_per_group * ch_groups)


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
        raise _CannotGrow(f"cannot widen the channels of {path}: they feed both a grouped convolution "
                          "and a GroupNorm, whose new channels would have to be laid out differently")
    return ch_groups, unit


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
    if is_channel_norm(layer):
        return "chan"
    raise _CannotGrow(f"cannot widen {name} ({type(layer).__name__}): only Conv, Linear, BatchNorm, "
                      "GroupNorm and LayerNorm layers can grow; use factors <= 1 for this stage")


def _block(name: str, idxs: list[int], roots: list[int | None], plan: ChannelPlan, layout: torch.Tensor) -> _Block:
    n = plan.channels
    k = len(idxs) // n
    start = min(idxs)
    order = sorted(zip(idxs, roots))
    if k * n != len(idxs) or [i for i, _ in order] != list(range(start, start + k * n)) or any(
            r != (i - start) // k for i, r in order):
        raise _CannotGrow(f"cannot widen {name}: it takes the channels of {plan.root} in a layout "
                          "other than a plain range (a split, slice or repeat of the feature map)")
    return _Block(start, n, k, plan.new, layout)


_OP_NAMES = {"_SplitOp": "split/chunk", "_SliceOp": "slice", "_UnbindOp": "unbind", "_ExpandOp": "expand"}


def _collect(dg: Any, net: nn.Module, plans: Sequence[ChannelPlan], who: str) -> list[_Resize]:
    """For every layer of the growing groups, the ranges of its dimensions that grow."""
    paths: dict[Any, str] = {m: n for n, m in net.named_modules()}
    params = {id(p): n for n, p in net.named_parameters()}
    resizes: dict[int, _Resize] = {}
    for plan in plans:
        layer = root_layer(dg, net, plan.root, plan.channels, who)
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
                raise _CannotGrow(f"cannot widen the channels of {plan.root}: they pass through a "
                                  f"{what} operation; use factors <= 1 for this stage")
            if (id(target), dim) in seen:
                continue  # a depthwise conv seen from both its sides
            seen.add((id(target), dim))
            block = _block(name, list(item.idxs), list(item.root_idxs), plan, layout)
            resizes.setdefault(id(target), _Resize(target, name)).blocks.setdefault(dim, []).append(block)
    return list(resizes.values())


def _position_map(name: str, size: int, blocks: list[_Block]) -> tuple[torch.Tensor, int]:
    """The new index of every old index of a dimension of ``size``, and its new size."""
    positions = torch.empty(size, dtype=torch.long)
    shift = cursor = 0
    for b in sorted(blocks, key=lambda b: b.start):
        end = b.start + b.n * b.k
        if b.start < cursor or end > size:
            raise _CannotGrow(f"cannot widen {name}: its coupled channel ranges overlap")
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
    out_old, in_old = layer_width(layer, "out"), layer_width(layer, "in")
    out_pos, out_new = maps.get("out", (torch.arange(out_old), out_old))
    in_pos, in_new = maps.get("in", (torch.arange(in_old), in_old))
    depthwise = _is_depthwise(layer)
    if depthwise:
        in_pos, in_new = out_pos, out_new
    groups = int(layer.groups) if conv else 1
    new_groups = out_new if depthwise else groups
    if out_new % new_groups or in_new % new_groups:
        raise _CannotGrow(f"cannot widen {name}: {in_new} inputs and {out_new} outputs do not split "
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
            raise _CannotGrow(f"cannot widen {name}: its new inputs would move between its "
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
            raise _CannotGrow(f"cannot widen {name}: its new channels do not form whole GroupNorm "
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


def _grow(dg: Any, net: nn.Module, plans: Sequence[ChannelPlan], who: str, seed: int) -> None:
    if not plans:
        return
    gen = torch.Generator().manual_seed(seed)
    for resize in _collect(dg, net, plans, who):
        target, name = resize.target, resize.name
        if isinstance(target, nn.Parameter):
            for dim, blocks in resize.blocks.items():
                assert isinstance(dim, int)
                _grow_parameter(net, name, target, dim, *_position_map(name, target.shape[dim], blocks))
            continue
        maps = {dim: _position_map(name, layer_width(target, str(dim)), blocks)
                for dim, blocks in resize.blocks.items()}
        if "chan" in maps:
            _grow_norm(target, name, *maps["chan"])
        else:
            _grow_mixing(target, name, maps, gen)
