"""The table of Lipschitz rules, keyed by operation: module class, function, or tensor method name.

Built-in rules come from ``module_rules`` and ``operation_rules``; activations not in the table
are bounded by their family's slope. :func:`register_rule` adds or replaces a rule (for a plugin's
own layers, say)::

    def scale_rule(mod, in_shape, graph):
        return abs(mod.factor), "constant factor"

    register_rule(MyScale, scale_rule)
"""

from __future__ import annotations

from typing import Any

from torch import fx, nn

from harden.graph.activation_families import family_of_call, family_of_module
from harden.lipschitz.activation_rules import activation_call_rule, activation_module_rule
from harden.lipschitz.context import ModuleRule, OperationRule
from harden.lipschitz.module_rules import MODULE_RULES
from harden.lipschitz.operation_rules import FUNCTION_RULES, METHOD_RULES

_MODULE_RULES: dict[type[nn.Module], ModuleRule] = dict(MODULE_RULES)
_FUNCTION_RULES: dict[Any, OperationRule] = dict(FUNCTION_RULES)
_METHOD_RULES: dict[str, OperationRule] = dict(METHOD_RULES)


def register_rule(operation: type[nn.Module] | str | Any, rule: ModuleRule | OperationRule) -> None:
    """Bound ``operation`` with ``rule`` from now on.

    ``operation`` is a module class (``rule(module, input_size, graph) -> (norm, note)``; subclasses
    use it too), a tensor method's name, or a function (``rule(operation) -> bound``, see
    :class:`harden.lipschitz.context.Operation`).
    """
    if isinstance(operation, type) and issubclass(operation, nn.Module):
        _MODULE_RULES[operation] = rule  # type: ignore[assignment]
    elif isinstance(operation, str):
        _METHOD_RULES[operation] = rule  # type: ignore[assignment]
    else:
        _FUNCTION_RULES[operation] = rule  # type: ignore[assignment]


def module_rule(module: nn.Module) -> ModuleRule | None:
    """The rule for ``module``: its class's (or nearest registered base class's), else its activation family's."""
    for cls in type(module).__mro__:
        if cls in _MODULE_RULES:
            return _MODULE_RULES[cls]
    family = family_of_module(module)
    return activation_module_rule(family) if family is not None else None


def operation_rule(node: fx.Node) -> OperationRule | None:
    """The rule for a ``call_function`` or ``call_method`` node, else its activation family's (None if neither)."""
    if node.op == "call_method":
        rule = _METHOD_RULES.get(str(node.target))
    else:
        try:
            rule = _FUNCTION_RULES.get(node.target)
        except TypeError:  # an unhashable target
            rule = None
    if rule is not None:
        return rule
    family = family_of_call(node)
    return activation_call_rule(family) if family is not None else None
