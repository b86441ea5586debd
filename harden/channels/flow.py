"""Channel flow through channel shuffles, chunks and splits: which channels of a network share their fate.

torch-pruning cannot follow a ShuffleNet channel shuffle (``view`` into groups, ``transpose``,
``view`` back), and pairs the parts of a split with the wrong layers when its trace meets them out of
order (MixNet's mixed-kernel convolutions), so for networks with either the width transforms follow
the channels themselves, on the fx graph. Every channel of every feature map gets an identity:

- a convolution or linear layer makes new channels (one per filter, its *producer*) and takes its
  input columns from the channels it reads; a norm, a depthwise convolution, an activation, pooling
  or a flatten keeps them; an elementwise add or multiply (residual, gate) joins its operands'
  channels place by place;
- a concatenation lists its inputs' channels; ``chunk`` cuts them into equal parts. The narrowed
  network cuts its narrower input into equal parts again, so each part must keep as many channels
  as the others: a *balance* (one per chunk, the channels of every part). A split into sizes a
  module stores (timm's ``MixedConv2d``: ``splits``, one convolution per part) is a *cut*: its
  parts may narrow unequally, as the sizes are rewritten after the removal;
- a channel shuffle views the channels as a grid of G groups of C/G and recomputes C/G from the
  narrower input, so the channels at the same place of every group are joined: they go together.

Joined channels form a *class*: removing a class removes its filters, norm entries and input
columns everywhere. The network's input channels and its outputs are fixed. Operations this
analysis cannot follow (grouped convolutions, other splits into fixed sizes, channel slices, ...) stop it
with :class:`FlowError`. Analysis only: :mod:`~harden.channels.flow_groups` chooses and removes classes.
"""

from __future__ import annotations

import itertools
import math
import operator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from harden.errors import HardenError
from harden.graph.tracing import TracedNet, node_module_path, shape_of

CONV = nn.modules.conv._ConvNd
_CHUNKS = {"chunk", torch.chunk}
_SPLITS = {"split", "tensor_split", "unbind", "split_with_sizes", torch.split, torch.tensor_split, torch.unbind}
_CATS = {torch.cat, torch.concat, torch.concatenate}
_RESHAPES = {"view", "reshape", torch.reshape}
_TRANSPOSES = {"transpose", "permute", "swapaxes", torch.transpose, torch.permute, torch.swapaxes}
_KINDS = ("out", "in", "chan")  # a filter, an input column, a norm or depthwise channel


class FlowError(HardenError):
    """An operation the channel flow analysis cannot follow (the message says which and where)."""


@dataclass(frozen=True)
class Slot:
    """One channel place of a layer: ``kind`` is ``out`` (a filter), ``in`` (an input column of a
    convolution or linear layer) or ``chan`` (a norm's or depthwise convolution's channel)."""

    layer: str
    kind: str
    index: int


@dataclass
class _Grid:
    """A feature map viewed as (N, rows, cols, ...): the channel identities of each place."""

    cells: list[list[int]]


@dataclass
class ChannelFlow:
    """Channel identities of a traced network, joined into classes (a union-find over identities)."""

    slots: list[Slot | None] = field(default_factory=list)   # per identity: the layer place, if any
    parent: list[int] = field(default_factory=list)
    fixed: set[int] = field(default_factory=set)             # identities that must stay
    balances: list[list[list[int]]] = field(default_factory=list)  # per chunk: its parts' identities
    cuts: list[tuple[str, list[list[int]]]] = field(default_factory=list)  # per stored split: module, parts
    layers: dict[str, nn.Module] = field(default_factory=dict)     # layers met, in graph order
    splitters: dict[str, nn.Module] = field(default_factory=dict)  # modules that store their split sizes
    slot_ids: dict[Slot, int] = field(default_factory=dict)

    def new(self, slot: Slot | None = None) -> int:
        """A new identity; a layer place has one identity, whichever call of the layer (reuse) meets it."""
        if slot is not None and slot in self.slot_ids:
            return self.slot_ids[slot]
        self.slots.append(slot)
        self.parent.append(len(self.parent))
        if slot is not None:
            self.slot_ids[slot] = len(self.parent) - 1
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def place(self, ids: list[int], layer: str, kind: str) -> None:
        """Join the channels ``ids`` with the places of ``layer``."""
        for j, i in enumerate(ids):
            self.join(i, self.new(Slot(layer, kind, j)))

    def classes(self) -> dict[int, list[int]]:
        """Class (its smallest identity) -> its identities."""
        found: dict[int, list[int]] = {}
        for i in range(len(self.parent)):
            found.setdefault(self.find(i), []).append(i)
        return found


def _unsupported(what: str, node: fx.Node) -> FlowError:
    path = node_module_path(node)
    return FlowError(f"{what} at {repr(path) if path else 'node ' + repr(node.name)}")


def _dim(node: fx.Node, position: int, default: int, ndim: int) -> int:
    value = node.kwargs.get("dim", node.args[position] if len(node.args) > position else default)
    if not isinstance(value, int):
        raise _unsupported("an operation along a computed dimension", node)
    return value % ndim if ndim else value


def _ids(value: Any) -> list[int]:
    """Every identity in a value (channels, grids, parts, nested tuples)."""
    if isinstance(value, _Grid):
        return [i for row in value.cells for i in row]
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], int):
        return list(value)
    if isinstance(value, (list, tuple)):
        return [i for v in value for i in _ids(v)]
    return []


def _same_channels(node: fx.Node, x: Any) -> Any:
    """The identities of an operation that keeps the channels (activation, pooling, flatten, ...)."""
    out = shape_of(node)
    src = shape_of(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) else None
    if out is None or len(out) < 2 or (src is not None and len(out) not in (2, len(src))):
        raise _unsupported("an operation that reduces the channels", node)
    if isinstance(x, _Grid):
        if len(out) == 5 and (out[1], out[2]) == (len(x.cells), len(x.cells[0])):
            return x
        raise _unsupported("an operation on a channel grid", node)
    if out[1] == len(x):
        return x
    if len(out) == 2 and src is not None and len(src) > 2 and out[1] == len(x) * math.prod(src[2:]):
        repeat = math.prod(src[2:])  # flattened: each channel becomes ``repeat`` features
        return [i for i in x for _ in range(repeat)]
    raise _unsupported(f"an operation that changes the channels ({len(x)} -> {out[1]})", node)


def _conv(flow: ChannelFlow, node: fx.Node, path: str, layer: nn.Module, x: list[int]) -> list[int]:
    if layer.transposed:
        raise _unsupported("a transposed convolution", node)
    if layer.groups == layer.in_channels == layer.out_channels and layer.groups > 1:
        flow.place(x, path, "chan")
        return x
    if layer.groups != 1:
        raise _unsupported("a grouped convolution", node)
    flow.place(x, path, "in")
    return [flow.new(Slot(path, "out", j)) for j in range(layer.out_channels)]


def _module(flow: ChannelFlow, node: fx.Node, layer: nn.Module, x: Any) -> Any:
    path = str(node.target)
    if isinstance(layer, (CONV, nn.Linear, nn.modules.batchnorm._BatchNorm)):
        if not isinstance(x, list):
            raise _unsupported(f"a {type(layer).__name__} on a channel grid", node)
        flow.layers.setdefault(path, layer)
    if isinstance(layer, CONV):
        return _conv(flow, node, path, layer, x)
    if isinstance(layer, nn.Linear):
        flow.place(x, path, "in")
        return [flow.new(Slot(path, "out", j)) for j in range(layer.out_features)]
    if isinstance(layer, nn.modules.batchnorm._BatchNorm):
        flow.place(x, path, "chan")
        return x
    if isinstance(layer, nn.ChannelShuffle) and isinstance(x, list):
        groups = int(layer.groups)
        grid = _grid(flow, x, groups, len(x) // groups, fixed_rows=True)
        return [grid.cells[r][c] for c in range(len(grid.cells[0])) for r in range(groups)]
    if any(True for _ in layer.parameters()):
        raise _unsupported(f"a {type(layer).__name__} layer", node)
    return _same_channels(node, x)


def _grid(flow: ChannelFlow, x: list[int], rows: int, cols: int, fixed_rows: bool) -> _Grid:
    """``x`` viewed as rows x cols; the fixed axis keeps its size, so the other's places are joined."""
    cells = [x[r * cols:(r + 1) * cols] for r in range(rows)]
    if fixed_rows:
        for c in range(cols):
            for r in range(1, rows):
                flow.join(cells[0][c], cells[r][c])
    else:
        for row in cells:
            for i in row[1:]:
                flow.join(row[0], i)
    return _Grid(cells)


def _sizes(node: fx.Node) -> list[Any]:
    sizes = list(node.args[1:])
    if len(sizes) == 1 and isinstance(sizes[0], (list, tuple)):
        sizes = list(sizes[0])
    return sizes


def _computed(size: Any) -> bool:
    """A size recomputed from the input (so it follows a narrower input), not a constant."""
    return isinstance(size, fx.Node) or size == -1


def _reshape(flow: ChannelFlow, node: fx.Node, x: Any) -> Any:
    src, out, sizes = shape_of(node.args[0]), shape_of(node), _sizes(node)
    if src is None or out is None or len(sizes) != len(out):
        raise _unsupported("a reshape of the channels", node)
    if isinstance(x, list) and len(src) == 4 and len(out) == 5 and out[3:] == src[2:]:
        rows_fixed, cols_fixed = (not _computed(sizes[1]), not _computed(sizes[2]))
        if out[1] * out[2] == len(x) and rows_fixed != cols_fixed:  # the other axis follows the input
            return _grid(flow, x, out[1], out[2], fixed_rows=rows_fixed)
    elif isinstance(x, _Grid) and len(src) == 5 and len(out) == 4 and out[2:] == src[3:] and _computed(sizes[1]):
        return [i for row in x.cells for i in row]
    elif isinstance(x, list) and (len(out) == 2 or out[1] == src[1]) and _computed(sizes[1]):
        return _same_channels(node, x)
    raise _unsupported("a reshape of the channels into a fixed size", node)


def _transpose(node: fx.Node, x: Any) -> Any:
    src = shape_of(node.args[0])
    given = _sizes(node) if node.target in ("permute", torch.permute) else node.args[1:3]
    if src is None or len(given) < 2 or not all(isinstance(d, int) for d in given):
        raise _unsupported("a transpose of the channels", node)
    dims = [d % len(src) for d in given]
    if node.target not in ("permute", torch.permute):
        perm = list(range(len(src)))
        perm[dims[0]], perm[dims[1]] = perm[dims[1]], perm[dims[0]]
        dims = perm
    if isinstance(x, _Grid) and dims[:3] == [0, 2, 1]:
        return _Grid([list(col) for col in zip(*x.cells)])
    if isinstance(x, list) and len(dims) > 1 and dims[1] == 1 and dims[0] == 0:
        return x
    raise _unsupported("a transpose of the channels", node)


def _chunk(flow: ChannelFlow, node: fx.Node, x: Any) -> tuple[list[int], ...]:
    src = shape_of(node.args[0])
    chunks = node.kwargs.get("chunks", node.args[1] if len(node.args) > 1 else None)
    if not isinstance(x, list) or src is None or _dim(node, 2, 0, len(src)) != 1:
        raise _unsupported("a chunk along another dimension than the channels", node)
    if not isinstance(chunks, int) or chunks < 1 or len(x) % chunks:
        raise _unsupported("a chunk of the channels into unequal parts", node)
    size = len(x) // chunks
    parts = [x[k * size:(k + 1) * size] for k in range(chunks)]
    if chunks > 1:
        flow.balances.append(parts)
    return tuple(parts)


def is_split_conv(module: nn.Module | None) -> bool:
    """A module that splits its input into parts of sizes it stores (``splits``), one convolution per
    part, as timm's ``MixedConv2d`` (MixNet's mixed-kernel convolutions) does."""
    splits = getattr(module, "splits", None)
    convs = list(module.children()) if module is not None else []
    return (isinstance(splits, (list, tuple)) and len(splits) == len(convs) > 0
            and all(isinstance(c, CONV) for c in convs))


def _split(flow: ChannelFlow, node: fx.Node, x: Any, modules: dict[str, nn.Module]) -> tuple[list[int], ...]:
    """A split into stored sizes, which the narrowed network reads from its module: the parts may
    narrow unequally (they are rewritten after the removal), each keeps a share of its channels."""
    path = node_module_path(node) or ""
    module = modules.get(path)
    sizes = node.kwargs.get("split_size_or_sections", node.args[1] if len(node.args) > 1 else None)
    src = shape_of(node.args[0]) if node.args else None
    if (node.target not in ("split", torch.split) or not isinstance(x, list) or src is None
            or _dim(node, 2, 0, len(src)) != 1 or not is_split_conv(module)
            or list(sizes or []) != list(getattr(module, "splits", []))):
        raise _unsupported("a split of the channels into parts of fixed sizes", node)
    bounds = [0, *itertools.accumulate(sizes)]
    parts = [x[a:b] for a, b in zip(bounds, bounds[1:])]
    flow.cuts.append((path, parts))
    flow.splitters[path] = module
    return tuple(parts)


def _elementwise(flow: ChannelFlow, node: fx.Node, xs: list[Any]) -> Any:
    wide = [x for x in xs if isinstance(x, list) and len(x) > 1]
    if any(not isinstance(x, list) for x in xs) or any(len(x) != len(wide[0]) for x in wide):
        raise _unsupported("an elementwise operation on channels that do not line up", node)
    for x in wide[1:]:
        for a, b in zip(wide[0], x):
            flow.join(a, b)
    return _same_channels(node, wide[0] if wide else xs[0])


def _function(flow: ChannelFlow, node: fx.Node, values: dict[fx.Node, Any], modules: dict[str, nn.Module]) -> Any:
    target = node.target
    x = values.get(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) else None
    if target is operator.getitem and isinstance(x, tuple):
        return x[node.args[1]]
    if target in _CHUNKS:
        return _chunk(flow, node, x)
    if target in _SPLITS:
        return _split(flow, node, x, modules)
    if shape_of(node) is None:
        return None  # sizes and other non-tensor values
    if target in _CATS:
        parts = [values.get(a) for a in node.args[0]]
        src = shape_of(node.args[0][0])
        if not all(isinstance(p, list) for p in parts) or src is None or _dim(node, 1, 0, len(src)) != 1:
            raise _unsupported("a concatenation along another dimension than the channels", node)
        return [i for p in parts for i in p]
    if target in _RESHAPES:
        return _reshape(flow, node, x)
    if target in _TRANSPOSES:
        return _transpose(node, x)
    if target is operator.getitem:
        return _same_channels(node, x)
    xs = [values.get(a) for a in node.all_input_nodes if values.get(a) is not None]
    if not xs:
        return None
    return _elementwise(flow, node, xs) if len(xs) > 1 else _same_channels(node, xs[0])


def follow(traced: TracedNet, net: nn.Module | None = None) -> ChannelFlow:
    """Follow the channels of a traced network (see the module docstring); FlowError where it cannot.

    ``net`` is the traced module (the GraphModule keeps only the layers it calls, not the modules
    whose forward it traced through, such as a split convolution)."""
    flow = ChannelFlow()
    modules = dict((net or traced.gm).named_modules())
    values: dict[fx.Node, Any] = {}
    for node in traced.gm.graph.nodes:
        x = values.get(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) else None
        if node.op == "placeholder":
            shape = shape_of(node)
            ids = [flow.new() for _ in range(shape[1])] if shape is not None and len(shape) > 1 else None
            flow.fixed.update(ids or [])
            values[node] = ids
        elif node.op == "output":
            flow.fixed.update(_ids([values.get(a) for a in node.all_input_nodes]))
        elif node.op == "get_attr":
            if shape_of(node) is not None:
                raise _unsupported("a parameter used outside its layer", node)
            values[node] = None
        elif node.op == "call_module":
            if x is None:
                raise _unsupported("a layer on a value without channels", node)
            values[node] = _module(flow, node, modules[str(node.target)], x)
        else:
            values[node] = _function(flow, node, values, modules)
    return flow
