"""Lipschitz rules for activations: the slope of the activation's family (``harden.graph.activation_families``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import fx, nn
from torch.fx.operator_schemas import normalize_function

from harden.graph.activation_families import ActivationFamily
from harden.lipschitz.context import GraphBounds, ModuleRule, Operation, OperationRule, Unsupported


def _family_slope(family: ActivationFamily, params: dict[str, Any], name: str) -> float:
    if family.slope is None:
        raise Unsupported(f"no Lipschitz rule for {name}")
    return family.slope(params)


def activation_module_rule(family: ActivationFamily) -> ModuleRule:
    """The rule for a module of ``family``: its slope from the module's own parameters."""
    def rule(mod: nn.Module, in_shape: tuple[int, ...] | None, graph: GraphBounds) -> tuple[float, str]:
        params = {name: getattr(mod, name) for name in family.slope_parameters if hasattr(mod, name)}
        return _family_slope(family, params, type(mod).__name__), ""

    return rule


def _named_arguments(node: fx.Node) -> dict[str, Any] | None:
    """The call's arguments by name (a tensor method read as the torch function of the same name)."""
    fn = node.target if node.op == "call_function" else getattr(torch, str(node.target), None)
    if fn is None:
        return None
    try:
        named = normalize_function(fn, tuple(node.args), dict(node.kwargs), normalize_to_only_use_kwargs=True)
    except Exception:  # no usable signature or schema
        return None
    return None if named is None else dict(named.kwargs)


def activation_call_rule(family: ActivationFamily) -> OperationRule:
    """The rule for a call of ``family``: its slope from the call's arguments.

    A call whose slope is 1 and that takes no slope parameter passes its input's bound on without a
    row in the table (``relu``, ``tanh``, ``hardtanh``); the others get one.
    """
    def rule(op: Operation) -> float:
        named = _named_arguments(op.node)
        if named is None:
            if family.slope_parameters and len(op.node.args) > 1:
                raise Unsupported(f"{op.name} with arguments that cannot be named")
            named = dict(op.node.kwargs)
        raw = {k: v for k, v in named.items() if k in family.slope_parameters}
        if any(op.depends(v) for v in raw.values()):
            raise Unsupported(f"{op.name} with an input-dependent slope")
        params = {k: op.graph.const(v) for k, v in raw.items()}
        slope = _family_slope(family, params, op.name)
        if slope == 1.0 and not params:
            return op.bound_of(op.first)
        return op.scaled(slope)

    return rule
