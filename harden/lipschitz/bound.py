"""The network bound: each operation's rule applied along the traced graph, from the input to the logits."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import fx, nn

from harden.errors import UsageError
from harden.graph import trace_with_shapes
from harden.graph.tracing import eval_mode
from harden.lipschitz.context import GraphBounds, Operation, Unsupported, label, tensor_nodes
from harden.lipschitz.registry import module_rule, operation_rule
from harden.lipschitz.result import LipschitzReport, LipschitzRow
from harden.lipschitz.spectral import DEFAULT_ITERATIONS, DEFAULT_TOLERANCE
from harden.model import HardenedModel


def _is_tensorish(node: Any) -> bool:
    """Whether shape propagation saw a tensor (or a tuple holding tensors) come out of ``node``."""
    if not isinstance(node, fx.Node):
        return False
    meta = node.meta.get("tensor_meta", node.meta.get("val"))

    def has_tensor(m: Any) -> bool:
        if hasattr(m, "shape") and hasattr(m, "dtype"):  # a tensor, a fake tensor or ShapeProp's TensorMetadata
            return True
        return isinstance(m, (list, tuple)) and any(has_tensor(x) for x in m)

    return meta is not None and has_tensor(meta)


def _needed(output: fx.Node) -> set[fx.Node]:
    """The nodes the output depends on (only they matter)."""
    needed: set[fx.Node] = set()
    stack = [output]
    while stack:
        n = stack.pop()
        if n in needed:
            continue
        needed.add(n)
        stack.extend(tensor_nodes((n.args, n.kwargs)))
    return needed


def _module_bound(op: Operation) -> float:
    """A module call: the module's own bound times its (single) input's bound."""
    node, first = op.node, op.first
    mod = op.graph.modules[str(node.target)]
    deps = [a for a in tensor_nodes((node.args, node.kwargs)) if op.depends(a)]
    if len(deps) != 1 or deps[0] is not first:
        raise Unsupported(f"{type(mod).__name__} with several input-dependent arguments")
    rule = module_rule(mod)
    if rule is None:
        raise Unsupported(f"no Lipschitz rule for {type(mod).__name__}")
    norm, note = op.graph.module_norm(mod, op.in_shape, rule)
    op.row(type(mod).__name__, norm, note)
    return norm * op.bound_of(first)


def _node_bound(op: Operation) -> float:
    """The bound of one call node, by the rule for its operation."""
    if op.node.op == "call_module":
        return _module_bound(op)
    rule = operation_rule(op.node)
    if rule is None:
        raise Unsupported(f"no Lipschitz rule for {op.name}")
    return rule(op)


def _propagate(graph_bounds: GraphBounds, graph: fx.Graph) -> float:
    """The bound of the graph's output: products along paths, sums over additions."""
    nodes = list(graph.nodes)
    needed = _needed(next(n for n in reversed(nodes) if n.op == "output"))
    dep: dict[fx.Node, bool] = {}
    lip: dict[fx.Node, float] = {}

    def bound_of(v: Any) -> float:
        return lip.get(v, 0.0) if isinstance(v, fx.Node) else 0.0

    def depends(v: Any) -> bool:
        return isinstance(v, fx.Node) and dep.get(v, False)

    for node in nodes:
        if node not in needed:
            continue
        if node.op == "placeholder":
            dep[node], lip[node] = True, 1.0
            continue
        if node.op == "output":
            outs = [n for n in tensor_nodes(node.args) if dep.get(n)]
            return math.sqrt(sum(bound_of(n) ** 2 for n in outs)) if len(outs) > 1 else (
                bound_of(outs[0]) if outs else 0.0)
        inputs = tensor_nodes((node.args, node.kwargs))
        dep[node] = node.op != "get_attr" and any(dep.get(n, False) and _is_tensorish(n) for n in inputs)
        if not dep[node] or not _is_tensorish(node):
            dep[node] = dep[node] and _is_tensorish(node)
            lip[node] = 0.0
            continue
        try:
            lip[node] = _node_bound(Operation(node, graph_bounds, bound_of, depends))
        except Unsupported as exc:
            graph_bounds.unsupported.append(f"{label(node)}: {exc}")
            lip[node] = math.inf
    raise AssertionError("graph without output")  # pragma: no cover


class _Body(nn.Module):
    """A HardenedModel without its normalization (kept as the first row of the table)."""

    def __init__(self, model: HardenedModel) -> None:
        super().__init__()
        self.input_transforms = model.input_transforms
        self.net = model.net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.input_transforms(x))


def lipschitz_bound(model: HardenedModel | nn.Module, input_size: Sequence[int] | int | None = None, *,
                    n_iter: int = DEFAULT_ITERATIONS, tol: float = DEFAULT_TOLERANCE) -> LipschitzReport:
    """An upper bound on the l2 Lipschitz constant of ``model`` at ``input_size`` (C, H, W), with a per-layer table.

    A :class:`HardenedModel` takes images in [0, 1] and its own input size by default; its
    normalization ``(x - mean) / std`` contributes ``1 / min(std)``. Batch norm is taken in eval mode.
    Operator norms take at most ``n_iter`` Lanczos steps each and stop when the Ritz residual falls
    below ``tol`` (relative).
    """
    if isinstance(input_size, int):
        input_size = (3, input_size, input_size)
    rows: list[LipschitzRow] = []
    if isinstance(model, HardenedModel):
        size = tuple(input_size or model.input_size)
        norm_factor = float((1.0 / model.normalize.std.detach().double()).abs().max())
        rows.append(LipschitzRow("normalize", "Normalize", size, norm_factor, "1 / min std"))
        body: nn.Module = _Body(model)
        root: nn.Module = model
    else:
        if input_size is None:
            raise UsageError("lipschitz_bound() on a plain nn.Module needs input_size=(C, H, W)")
        size = tuple(input_size)
        norm_factor = 1.0
        body = root = model
    if len(size) < 1 or min(size) <= 0:
        raise UsageError(f"input size must be positive, got {size}")
    with eval_mode(root):
        traced = trace_with_shapes(body, size)
        graph_bounds = GraphBounds(traced.gm, n_iter, tol)
        with torch.no_grad():
            bound = _propagate(graph_bounds, traced.gm.graph)
    return LipschitzReport(norm_factor * bound, size, rows + graph_bounds.rows, graph_bounds.unsupported)
