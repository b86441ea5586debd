"""Finding the downsampling points of a CNN from its traced graph.

A downsampling point is every operation that reduces the spatial size from one resolution to the
next: a strided convolution together with the parallel shortcut convolution or pooling of the same
residual block (they must change together or the residual add breaks), or a pooling layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import fx, nn

from harden.graph.tracing import TracedNet, shape_of

_POOL_MODULES = (nn.MaxPool2d, nn.AvgPool2d)
_POOL_FUNCTIONS = {torch.nn.functional.max_pool2d, torch.nn.functional.avg_pool2d}
_MERGE_FUNCTIONS = {torch.add, torch.cat, torch.concat, torch.stack, torch.sub, torch.mul}
try:
    import operator

    _MERGE_FUNCTIONS |= {operator.add, operator.iadd, operator.sub, operator.mul}
except ImportError:  # pragma: no cover
    pass


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    v = tuple(v)
    return (int(v[0]), int(v[-1]))


@dataclass
class DownsamplingOp:
    """One operation inside a downsampling point."""

    path: str                 # module path, or the node name for a functional call
    kind: str                 # "conv" | "pool" | "function"
    stride: tuple[int, int]
    editable: bool = True     # functional calls cannot be edited in place


@dataclass
class DownsamplingPoint:
    """All operations that take the feature map from ``in_size`` to ``out_size`` together."""

    index: int
    in_size: tuple[int, int]
    out_size: tuple[int, int]
    ops: list[DownsamplingOp] = field(default_factory=list)

    @property
    def stride(self) -> int:
        """The common stride of the point (its largest, for mixed points)."""
        return max(max(op.stride) for op in self.ops)

    @property
    def kind(self) -> str:
        kinds = {op.kind for op in self.ops}
        return kinds.pop() if len(kinds) == 1 else "+".join(sorted(kinds))

    def describe(self) -> str:
        names = ", ".join(op.path for op in self.ops)
        return (f"{self.index}: {self.in_size[0]}x{self.in_size[1]} -> {self.out_size[0]}x{self.out_size[1]} "
                f"stride {self.stride} [{names}]")


def _strided_op(node: fx.Node, modules: dict[str, nn.Module]) -> DownsamplingOp | None:
    if node.op == "call_module":
        mod = modules.get(str(node.target))
        if isinstance(mod, nn.Conv2d):
            s = _pair(mod.stride)
            return DownsamplingOp(str(node.target), "conv", s) if max(s) > 1 else None
        if isinstance(mod, _POOL_MODULES):
            s = _pair(mod.stride if mod.stride is not None else mod.kernel_size)
            return DownsamplingOp(str(node.target), "pool", s) if max(s) > 1 else None
        return None
    if node.op == "call_function" and node.target in _POOL_FUNCTIONS:
        kernel = node.kwargs.get("kernel_size", node.args[1] if len(node.args) > 1 else None)
        stride = node.kwargs.get("stride", node.args[2] if len(node.args) > 2 else None) or kernel
        if stride is None:
            return None
        s = _pair(stride)
        return DownsamplingOp(node.name, "function", s, editable=False) if max(s) > 1 else None
    return None


def find_downsampling_points(traced: TracedNet) -> list[DownsamplingPoint]:
    """The downsampling points of ``traced``, in order from the input to the output.

    Strided operations that start from the same resolution belong to one point: in a residual
    stage transition this is the strided main-path conv and its shortcut conv or pooling.
    """
    modules = traced.modules()
    points: dict[tuple[int, int], DownsamplingPoint] = {}
    for node in traced.gm.graph.nodes:
        op = _strided_op(node, modules)
        if op is None:
            continue
        src = shape_of(node.args[0]) if node.args else None
        out = shape_of(node)
        if src is None or out is None or len(src) != 4 or len(out) != 4:
            continue
        in_size, out_size = (src[2], src[3]), (out[2], out[3])
        if in_size == out_size:  # a strided layer on a 1x1 map downsamples nothing
            continue
        point = points.get(in_size)
        if point is None:
            point = points[in_size] = DownsamplingPoint(len(points), in_size, out_size)
        point.ops.append(op)
    return list(points.values())


def find_stem(traced: TracedNet, points: Sequence[DownsamplingPoint]) -> list[DownsamplingPoint]:
    """The points that belong to the stem: those before the first residual merge (at most two).

    A point whose strided conv has a parallel shortcut is a stage transition and ends the stem.

    Networks without residual merges (VGG, AlexNet) have a stem only if their first point is a
    convolution (AlexNet's stride-4 conv); VGG's first pooling already ends a stage.
    """
    if not points:
        return []
    first_merge_size = None
    for node in traced.gm.graph.nodes:
        if node.op == "call_function" and node.target in _MERGE_FUNCTIONS:
            args = [a for arg in node.args for a in (arg if isinstance(arg, (list, tuple)) else [arg])]
            shapes = [shape_of(a) for a in args if isinstance(a, fx.Node)]
            if len([s for s in shapes if s is not None and len(s) == 4]) >= 2:
                out = shape_of(node)
                if out is not None and len(out) == 4:
                    first_merge_size = (out[2], out[3])
                    break
        if node.op == "call_method" and node.target in ("add", "add_", "mul"):
            out = shape_of(node)
            if out is not None and len(out) == 4 and any(isinstance(a, fx.Node) for a in node.args[1:]):
                first_merge_size = (out[2], out[3])
                break
    if first_merge_size is None:
        return points[:1] if points[0].kind == "conv" else []
    stem = []
    for p in points:
        # a point with a parallel shortcut is a residual stage transition, never part of the stem
        if len(p.ops) > 1 or p.out_size[0] < first_merge_size[0] or p.out_size[1] < first_merge_size[1]:
            break
        stem.append(p)
    return stem[:2]
