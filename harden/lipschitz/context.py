"""What a Lipschitz rule works with: the graph being bounded (constants, norms, rows) and one operation of it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from harden.graph import node_module_path, shape_of
from harden.lipschitz.result import LipschitzRow
from harden.lipschitz.spectral import linear_operator_norm, matrix_spectral_norm

#: The bound on a module's own Lipschitz constant at an input size (C, H, W), and a note for the table.
ModuleRule = Callable[[nn.Module, "tuple[int, ...] | None", "GraphBounds"], "tuple[float, str]"]
#: The bound of a function or method call's output, from the bounds of its inputs (``Operation.bound_of``).
OperationRule = Callable[["Operation"], float]


class Unsupported(Exception):
    """An operation without a global Lipschitz bound (the message says why)."""


class GraphBounds:
    """A traced graph being bounded: its modules, constants, operator norms and the table's rows."""

    def __init__(self, traced_gm: fx.GraphModule, n_iter: int, tol: float) -> None:
        self.gm = traced_gm
        self.modules = dict(traced_gm.named_modules())
        self.n_iter = n_iter
        self.tol = tol
        self.rows: list[LipschitzRow] = []
        self.unsupported: list[str] = []
        self._const_cache: dict[fx.Node, Any] = {}
        self._norm_cache: dict[tuple[int, tuple[int, ...] | None], tuple[float, str]] = {}
        self.device = next((p.device for p in traced_gm.parameters()), torch.device("cpu"))

    def const(self, v: Any) -> Any:
        """The value of ``v`` (a node that does not depend on the input, or a structure holding such nodes)."""
        if not isinstance(v, fx.Node):
            if isinstance(v, (list, tuple)):
                return type(v)(self.const(x) for x in v)
            if isinstance(v, dict):
                return {k: self.const(x) for k, x in v.items()}
            return v
        if v not in self._const_cache:
            self._const_cache[v] = self._evaluate(v)
        return self._const_cache[v]

    def _evaluate(self, v: fx.Node) -> Any:
        if v.op == "get_attr":
            obj: Any = self.gm
            for part in str(v.target).split("."):
                obj = getattr(obj, part)
            return obj.detach() if isinstance(obj, torch.Tensor) else obj
        if v.op == "call_function":
            return v.target(*self.const(v.args), **self.const(v.kwargs))
        if v.op == "call_method":
            args = self.const(v.args)
            return getattr(args[0], v.target)(*args[1:], **self.const(v.kwargs))
        if v.op == "call_module":
            return self.modules[str(v.target)](*self.const(v.args), **self.const(v.kwargs))
        raise Unsupported(f"cannot evaluate constant {v.name}")

    def module_norm(self, mod: nn.Module, in_shape: tuple[int, ...] | None, rule: ModuleRule) -> tuple[float, str]:
        """``rule``'s bound for ``mod`` at ``in_shape``, computed once per module and input size."""
        key = (id(mod), in_shape)
        if key not in self._norm_cache:
            self._norm_cache[key] = rule(mod, in_shape, self)
        return self._norm_cache[key]

    def matrix_norm(self, weight: torch.Tensor) -> float:
        """Largest singular value of a matrix."""
        return matrix_spectral_norm(weight, n_iter=self.n_iter, tol=self.tol)

    def linear_norm(self, fn: Callable[[torch.Tensor], torch.Tensor], shape: tuple[int, ...]) -> float:
        """Operator norm of a linear (or affine) map on tensors of ``shape`` (batch included)."""
        dtype = next((p.dtype for p in self.gm.parameters()), torch.float32)
        return linear_operator_norm(fn, shape, device=self.device, dtype=dtype, n_iter=self.n_iter, tol=self.tol)


def label(node: fx.Node) -> str:
    """How the table and messages name a node: a module's path, or ``path:node`` for a call inside it."""
    if node.op == "call_module":
        return str(node.target)
    path = node_module_path(node)
    return f"{path}:{node.name}" if path else node.name


def tensor_nodes(args: Any) -> list[fx.Node]:
    """The nodes inside ``args`` (nested lists, tuples and dicts)."""
    out: list[fx.Node] = []
    fx.node.map_arg(args, lambda n: out.append(n) or n)
    return out


@dataclass
class Operation:
    """One call node being bounded, with the bounds of the nodes before it: what an :data:`OperationRule` reads.

    ``bound_of(v)`` is the bound of an earlier node (0 for constants); ``depends(v)`` says whether
    ``v`` depends on the input.
    """

    node: fx.Node
    graph: GraphBounds
    bound_of: Callable[[Any], float]
    depends: Callable[[Any], bool]

    @property
    def name(self) -> str:
        """The function's or method's name, as the table shows it."""
        target = self.node.target
        return target if isinstance(target, str) else getattr(target, "__name__", str(target))

    @property
    def is_method(self) -> bool:
        return self.node.op == "call_method"

    @property
    def first(self) -> Any:
        """The first argument (the input of most operations)."""
        return self.node.args[0] if self.node.args else None

    @property
    def in_shape(self) -> tuple[int, ...] | None:
        """The first argument's shape without the batch dimension, if known."""
        if not isinstance(self.first, fx.Node):
            return None
        shape = shape_of(self.first)
        return tuple(shape[1:]) if shape is not None else None

    def row(self, kind: str, norm: float, note: str = "") -> None:
        """Add a row for this operation to the table."""
        self.graph.rows.append(LipschitzRow(label(self.node), kind, self.in_shape, norm, note))

    def scaled(self, factor: float, note: str = "") -> float:
        """The bound of the first argument times ``factor`` (recorded as a row)."""
        self.row(self.name, factor, note)
        return factor * self.bound_of(self.first)
