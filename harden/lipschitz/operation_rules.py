"""Built-in Lipschitz rules for function and tensor-method calls, keyed by the function or the method's name.

Each rule takes an :class:`Operation` and returns the bound of its output: sums over additions,
``sqrt(sum of squares)`` over concatenations, a factor times the input's bound for constant scaling,
pooling and linear maps. Activation calls are bounded from their families (``activation_rules``).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx

from harden.graph import shape_of
from harden.lipschitz.context import Operation, OperationRule, Unsupported, tensor_nodes
from harden.lipschitz.spectral import adaptive_overlap, as_tuple, max_pool_factor


def _max_abs(value: Any) -> float:
    return float(torch.as_tensor(value, dtype=torch.float64).abs().max())


def _sum(op: Operation) -> float:
    """``a + alpha * b`` (and subtraction): the bounds add up."""
    alpha = abs(float(op.node.kwargs.get("alpha", 1.0)))
    a, b = (op.node.args + (None, None))[:2]
    return op.bound_of(a) + alpha * op.bound_of(b)


def _product(op: Operation) -> float:
    a, b = op.node.args[0], op.node.args[1]
    if op.depends(a) and op.depends(b):
        raise Unsupported("product of two input-dependent tensors (a gate or attention) has no global bound")
    x, c = (a, b) if op.depends(a) else (b, a)
    factor = _max_abs(op.graph.const(c))
    op.row(op.name, factor, "constant factor")
    return factor * op.bound_of(x)


def _quotient(op: Operation) -> float:
    a, b = op.node.args[0], op.node.args[1]
    if op.depends(b):
        raise Unsupported("division by an input-dependent tensor has no global bound")
    value = op.graph.const(b)
    factor = float(torch.as_tensor(value, dtype=torch.float64).abs().min().reciprocal())
    op.row(op.name, factor, "constant divisor")
    return factor * op.bound_of(a)


def _concatenation(op: Operation) -> float:
    items = op.node.args[0] if op.node.args else op.node.kwargs.get("tensors", ())
    return math.sqrt(sum(op.bound_of(t) ** 2 for t in items if op.depends(t)))


def _same(op: Operation) -> float:
    """Reshaping, selecting, copying, negating, dropout (eval), clamping: the input's bound."""
    return op.bound_of(op.first)


def _advanced_index(index: Any) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, (list, torch.Tensor, fx.Node)) for i in items)


def _getitem(op: Operation) -> float:
    if shape_of(op.first) is not None and _advanced_index(op.node.args[1]):
        raise Unsupported("indexing with a list or tensor can repeat elements")
    return _same(op)


def _max_over_groups(op: Operation) -> float:
    """``amax``: a max over disjoint groups of elements."""
    return op.scaled(1.0, "window overlap")


def _adaptive_max_pool(op: Operation) -> float:
    src, out = shape_of(op.first), shape_of(op.node)
    if src is None or out is None:
        raise Unsupported(f"{op.name} with unknown shapes")
    count = 1
    for size, o in zip(src[2:], out[2:]):
        count *= adaptive_overlap(size, o)
    return op.scaled(math.sqrt(count), "window overlap")


def _replication(op: Operation) -> float:
    out, src = shape_of(op.node), shape_of(op.first)
    if out is None or src is None:
        raise Unsupported(f"{op.name} with unknown shapes")
    return op.scaled(math.sqrt(math.prod(out) / max(1, math.prod(src))), "replication")


def _max_pool(dims: int) -> OperationRule:
    def rule(op: Operation) -> float:
        args = list(op.graph.const(op.node.args[1:]))
        kw = op.graph.const(op.node.kwargs)
        k = kw.get("kernel_size", args[0] if args else None)
        s = kw.get("stride", args[1] if len(args) > 1 else None) or k
        d = kw.get("dilation", args[3] if len(args) > 3 else 1)
        return op.scaled(max_pool_factor(as_tuple(k, dims), as_tuple(s, dims), as_tuple(d, dims)), "window overlap")

    return rule


def _linear_layer(op: Operation) -> float:
    """``F.linear``: the weight's largest singular value."""
    w = op.graph.const(op.node.args[1] if len(op.node.args) > 1 else op.node.kwargs["weight"])
    return op.scaled(op.graph.matrix_norm(w), "largest singular value")


def _linear_operator(op: Operation) -> float:
    """Pooling, resampling, padding, sums, convolutions with constant weights: the operator norm."""
    node = op.node
    if any(op.depends(a) for a in tensor_nodes((node.args[1:], node.kwargs))):
        raise Unsupported(f"{op.name} with several input-dependent arguments")
    rest, kwargs = op.graph.const(node.args[1:]), op.graph.const(node.kwargs)
    target = node.target
    if op.is_method:
        fn: Callable[[torch.Tensor], torch.Tensor] = lambda t: getattr(t, target)(*rest, **kwargs)  # noqa: E731
    else:
        fn = lambda t: target(t, *rest, **kwargs)  # noqa: E731
    src = shape_of(op.first)
    if src is None:
        raise Unsupported(f"{op.name} with unknown input size")
    return op.scaled(op.graph.linear_norm(fn, (1, *src[1:])), "linear operator norm")


_PRODUCT_MESSAGE = "a product of input-dependent tensors has no global bound"


def _matrix_product(op: Operation) -> float:
    """A product with a constant matrix: its largest singular value."""
    a, b = op.node.args[0], op.node.args[1]
    if not (op.depends(a) and op.depends(b)):
        const = op.graph.const(b if op.depends(a) else a)
        if isinstance(const, torch.Tensor) and const.dim() == 2:
            norm = op.graph.matrix_norm(const)
            op.row(op.name, norm, "largest singular value")
            return norm * op.bound_of(a if op.depends(a) else b)
    raise Unsupported(_PRODUCT_MESSAGE if not op.is_method else f"no Lipschitz rule for {op.name}")


def _no_bound(message: str) -> OperationRule:
    def rule(op: Operation) -> float:
        raise Unsupported(message)

    return rule


def _table(*groups: tuple[Iterable[Any], OperationRule]) -> dict[Any, OperationRule]:
    return {key: rule for keys, rule in groups for key in keys}


_NORM_MESSAGE = "normalizing by the input's own statistics is not globally Lipschitz"

FUNCTION_RULES: dict[Any, OperationRule] = _table(
    ((operator.add, operator.iadd, torch.add, operator.sub, operator.isub, torch.sub), _sum),
    ((operator.mul, operator.imul, torch.mul), _product),
    ((operator.truediv, operator.itruediv, torch.div, torch.true_divide), _quotient),
    ((torch.cat, torch.concat, torch.stack, torch.hstack, torch.vstack), _concatenation),
    ((operator.getitem,), _getitem),
    ((torch.flatten, torch.reshape, torch.permute, torch.transpose, torch.squeeze, torch.unsqueeze, torch.chunk,
      torch.split, torch.unbind, torch.narrow, torch.select, torch.movedim, torch.clone, torch.tensor_split,
      operator.neg, operator.pos, torch.neg, F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, torch.clamp,
      torch.clip), _same),
    ((torch.amax,), _max_over_groups),
    ((F.adaptive_max_pool1d, F.adaptive_max_pool2d), _adaptive_max_pool),
    ((F.max_pool1d,), _max_pool(1)), ((F.max_pool2d,), _max_pool(2)), ((F.max_pool3d,), _max_pool(3)),
    ((F.linear,), _linear_layer),
    ((F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
      F.interpolate, F.upsample, F.pad, torch.mean, torch.sum, F.pixel_shuffle, F.pixel_unshuffle, F.conv1d,
      F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d), _linear_operator),
    ((torch.matmul, operator.matmul), _matrix_product),
    ((F.layer_norm,), _no_bound("layer norm: " + _NORM_MESSAGE)),
    ((F.group_norm,), _no_bound("group norm: " + _NORM_MESSAGE)),
    ((F.instance_norm,), _no_bound("instance norm: " + _NORM_MESSAGE)),
    ((F.normalize,), _no_bound("l2 normalization: " + _NORM_MESSAGE)),
    ((F.scaled_dot_product_attention,),
     _no_bound("attention (products of input-dependent tensors) has no global bound")),
    ((torch.bmm,), _no_bound(_PRODUCT_MESSAGE)),
)

METHOD_RULES: dict[str, OperationRule] = _table(
    (("add", "add_", "sub", "sub_"), _sum),
    (("mul", "mul_"), _product),
    (("div", "div_", "truediv"), _quotient),
    (("cat",), _concatenation),
    (("flatten", "view", "reshape", "permute", "transpose", "contiguous", "squeeze", "unsqueeze", "chunk", "split",
      "unbind", "narrow", "select", "clone", "to", "float", "double", "half", "type_as", "movedim", "t", "neg",
      "clamp", "clamp_", "clip", "detach", "view_as", "reshape_as", "tensor_split", "cpu", "cuda", "__getitem__"),
     _same),
    (("amax",), _max_over_groups),
    (("expand", "expand_as", "repeat", "broadcast_to", "repeat_interleave"), _replication),
    (("mean", "sum"), _linear_operator),
    (("matmul",), _matrix_product),
)
