"""Finding the activation sites of a network: module instances and functional calls in forward code.

An activation *family* (relu, gelu, silu, ...; :mod:`harden.graph.activation_families`) is a set of
module classes, functions and tensor methods. :func:`find_activation_sites` traces a network with
torch.fx (in train and in eval mode) and reports

* every module instance of the family (found with ``named_modules``, so activations fused inside
  layers that fx keeps as leaves, such as timm's ``BatchNormAct2d.act``, are included),
* every functional call of the family (``F.relu``, ``torch.relu_``, ``x.relu()``, ...) with the
  smallest module whose own forward makes it (its *owner*, from ``node.meta['nn_module_stack']``),
* owners whose forward relies on an in-place activation module mutating its input,
* sites left alone because they implement a gate: calls made inside another activation class (timm's
  ``HardSigmoid`` is ``relu6(x + 3) / 6``) and the ``relu6(x + 3)`` pattern of hard-sigmoid/hard-swish.

Analysis only: nothing here edits the network (``plugins/activation.py`` does).
"""

from __future__ import annotations

import inspect
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from harden.errors import HardenError
from harden.graph.activation_families import (
    ActivationFamily,
    get_family,
    is_activation_class,
    torch_functions,
)
from harden.graph.tracing import node_module_path, trace
from harden.runtime.modes import modes_kept

_NN = torch._C._nn
_RELU6_FUNCTIONS = torch_functions((F, "relu6"), (_NN, "relu6"), (_NN, "relu6_"))


def call_name(node: fx.Node) -> str:
    """A short name for a functional call node: ``relu``, ``relu_``, ``leaky_relu``, ..."""
    if node.op == "call_method":
        return str(node.target)
    return getattr(node.target, "__name__", str(node.target))


def input_of(node: fx.Node) -> fx.Node | None:
    """The tensor an activation call or module applies to (its first argument)."""
    if node.args:
        first = node.args[0]
    else:
        first = node.kwargs.get("input", node.kwargs.get("self"))
    return first if isinstance(first, fx.Node) else None


def is_inplace(node: fx.Node, module: nn.Module | None = None) -> bool:
    """Whether an activation node overwrites its input (``relu_``, ``inplace=True``, ``ReLU(inplace=True)``)."""
    if node.op == "call_module":
        return bool(getattr(module, "inplace", False))
    if call_name(node).endswith("_"):
        return True
    if "inplace" in node.kwargs:
        return bool(node.kwargs["inplace"])
    if node.op == "call_function":
        try:
            bound = inspect.signature(node.target).bind(*node.args, **node.kwargs)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False
        return bool(bound.arguments.get("inplace", False))
    return False


def node_order(graph: fx.Graph) -> dict[fx.Node, int]:
    """The position of every node of ``graph`` in execution order."""
    return {n: i for i, n in enumerate(graph.nodes)}


def relies_on_mutation(node: fx.Node, order: dict[fx.Node, int] | None = None) -> bool:
    """Whether the input of in-place ``node`` is read again after it (so the forward sees the mutation)."""
    src = input_of(node)
    if src is None:
        return False
    order = order if order is not None else node_order(node.graph)
    return any(order[user] > order[node] for user in src.users if user is not node)


def _is_constant(value: Any, target: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value - target) < 1e-6


def is_hard_gate(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """``relu6(x + 3)``: the core of hard-sigmoid / hard-swish written with a ReLU6 (kept as a gate)."""
    if node.op == "call_module":
        if not isinstance(modules.get(str(node.target)), nn.ReLU6):
            return False
    elif not (node.op == "call_function" and node.target in _RELU6_FUNCTIONS):
        return False
    src = input_of(node)
    if src is None:
        return False
    adds = {"add", "add_", "__add__", "iadd", "__iadd__"}
    if src.op not in ("call_function", "call_method") or call_name(src) not in adds:
        return False
    return any(_is_constant(a, 3.0) for a in [*src.args[1:], *src.kwargs.values()])


@dataclass
class ModuleSite:
    """A module instance of the family, at every path it is registered under."""

    paths: list[str]
    kind: str

    @property
    def path(self) -> str:
        return self.paths[0]


@dataclass
class FunctionalSite:
    """A functional activation call and the module whose own forward makes it."""

    owner: str
    owner_type: str
    call: str
    inplace: bool = False


@dataclass
class ActivationSites:
    """What :func:`find_activation_sites` found for one family."""

    family: str
    modules: list[ModuleSite] = field(default_factory=list)
    functional: list[FunctionalSite] = field(default_factory=list)
    mutation_owners: list[str] = field(default_factory=list)
    mutation_outside: list[str] = field(default_factory=list)
    kept_gates: list[str] = field(default_factory=list)
    other_activations: Counter[str] = field(default_factory=Counter)
    untraced: list[str] = field(default_factory=list)

    def owners(self) -> list[str]:
        """Modules whose own forward must be rewritten (functional calls or reliance on mutation)."""
        seen: dict[str, None] = {}
        for site in self.functional:
            seen.setdefault(site.owner)
        for owner in self.mutation_owners:
            seen.setdefault(owner)
        return list(seen)

    def empty(self) -> bool:
        return not self.modules and not self.owners()


def _join(prefix: str, path: str) -> str:
    return f"{prefix}.{path}" if prefix and path else prefix or path


def _stack_types(node: fx.Node) -> list[type]:
    stack = node.meta.get("nn_module_stack") or {}
    out = []
    for value in stack.values():
        cls = value[1] if isinstance(value, tuple) and len(value) > 1 else value
        if isinstance(cls, type):
            out.append(cls)
    return out


def _is_builtin(module: nn.Module) -> bool:
    return type(module).__module__.startswith(("torch.nn.", "torch.ao.nn."))


# timm layers that fx keeps as leaves and that apply activations only through child modules (found
# by ``named_modules``): no need to trace them on their own.
_PLAIN_LEAVES = frozenset({
    "timm.layers.norm_act",  # BatchNormAct2d & co: ``self.act(x)``
    "timm.layers.conv2d_same",
    "timm.layers.pool2d_same",
    "timm.layers.cond_conv2d",
    "timm.layers.std_conv",
})


def _needs_own_scan(module: nn.Module) -> bool:
    """Whether a leaf fx did not look into must be traced on its own to find functional calls."""
    cls = type(module)
    return not (_is_builtin(module) or is_activation_class(cls) or cls.__module__ in _PLAIN_LEAVES)


def _traces(module: nn.Module, **kwargs: Any) -> list[fx.GraphModule]:
    """fx traces of ``module`` in train and in eval mode (modes restored afterwards)."""
    out = []
    with modes_kept(module):
        for training in (True, False):
            module.train(training)
            out.append(trace(module, **kwargs))
    return out


class _Scanner:
    def __init__(self, net: nn.Module, family: ActivationFamily) -> None:
        self.net = net
        self.family = family
        self.sites = ActivationSites(family.name)
        self.gate_modules: set[int] = set()
        self.scanned: set[int] = set()
        self.calls: Counter[tuple[str, str, str, bool]] = Counter()
        self.gates: Counter[str] = Counter()

    def scan(self, module: nn.Module, prefix: str) -> None:
        if id(module) in self.scanned:
            return
        self.scanned.add(id(module))
        try:
            graphs = _traces(module)
        except HardenError:
            # Untraceable as a whole: look inside its children; its own forward stays unread.
            if not _is_builtin(module) and not is_activation_class(type(module)) and self._may_call(module):
                self.sites.untraced.append(f"{prefix or '<root>'} ({type(module).__name__})")
            for name, child in module.named_children():
                if not _is_builtin(child):
                    self.scan(child, _join(prefix, name))
            return
        leaves: dict[str, nn.Module] = {}
        calls: Counter[tuple[str, str, str, bool]] = Counter()
        gates: Counter[str] = Counter()
        for gm in graphs:  # a call in a branch taken in one mode only is still found
            found, found_gates = self._visit_graph(gm, prefix, leaves)
            calls |= found
            gates |= found_gates
        self.calls.update(calls)
        self.gates.update(gates)
        for path, leaf in leaves.items():
            self.scan(leaf, path)

    def _note_mutation(self, node: fx.Node, order: dict[fx.Node, int], prefix: str, caller: str) -> None:
        """Record who reads the input of an in-place activation after it overwrote it.

        Reads inside ``caller`` (the module whose forward makes the call) can be redirected by rewriting
        that forward; reads outside it cannot and are reported.
        """
        owner = _join(prefix, caller)
        src = input_of(node)
        for user in (src.users if src is not None else ()):
            if user is node or order[user] < order[node]:
                continue
            path = node_module_path(user) or ""
            inside = not caller or path == caller or path.startswith(caller + ".")
            found = self.sites.mutation_owners if inside else self.sites.mutation_outside
            if owner not in found:
                found.append(owner)

    def _may_call(self, module: nn.Module) -> bool:
        """Whether the source of ``module``'s forward may make a call of the family (for reporting)."""
        names = {getattr(f, "__name__", "") for f in self.family.functions} | set(self.family.methods)
        try:
            source = inspect.getsource(type(module).forward)
        except (OSError, TypeError):
            return True
        pattern = r"\b(" + "|".join(re.escape(n) for n in sorted(names) if n) + r")\b|\bact"
        return re.search(pattern, source) is not None

    def _visit_graph(self, gm: fx.GraphModule, prefix: str, leaves: dict[str, nn.Module]
                     ) -> tuple[Counter[tuple[str, str, str, bool]], Counter[str]]:
        modules = dict(gm.named_modules())
        order = node_order(gm.graph)
        calls: Counter[tuple[str, str, str, bool]] = Counter()
        gates: Counter[str] = Counter()
        for node in gm.graph.nodes:
            if node.op == "call_module":
                mod = modules.get(str(node.target))
                if mod is None:
                    continue
                if self.family.matches_module(mod):
                    if is_hard_gate(node, modules):
                        self.gate_modules.add(id(mod))
                    elif is_inplace(node, mod) and relies_on_mutation(node, order):
                        self._note_mutation(node, order, prefix, _caller_path(node))
                elif _needs_own_scan(mod):
                    leaves.setdefault(_join(prefix, str(node.target)), mod)  # a leaf fx did not look into
                continue
            if not self.family.matches_call(node):
                continue
            owner = _join(prefix, node_module_path(node) or "")
            owner_types = _stack_types(node)
            inside = [t.__name__ for t in owner_types if is_activation_class(t)]
            if inside:
                gates[f"{call_name(node)} inside {inside[-1]} at {owner}"] += 1
                continue
            if is_hard_gate(node, modules):
                gates[f"{call_name(node)}(x + 3) in {owner or '<root>'}"] += 1
                continue
            owner_type = owner_types[-1].__name__ if owner_types else type(self.net.get_submodule(owner)).__name__
            inplace = is_inplace(node)
            calls[(owner, owner_type, call_name(node), inplace)] += 1
            if inplace and relies_on_mutation(node, order):
                self._note_mutation(node, order, prefix, node_module_path(node) or "")
        return calls, gates


def _caller_path(node: fx.Node) -> str:
    """The module whose forward makes the ``call_module`` ``node`` (the caller, not the callee)."""
    stack = [str(k) for k in (node.meta.get("nn_module_stack") or {})]
    # the last entry of a call_module node's stack is the called module itself
    if stack and stack[-1] == str(node.target):
        stack = stack[:-1]
    return stack[-1] if stack else ""


def find_activation_sites(net: nn.Module, family: str | ActivationFamily = "relu") -> ActivationSites:
    """Find the activation modules and functional calls of ``family`` in ``net`` (see module docstring).

    The network is traced in train and in eval mode so that calls in mode-dependent branches are
    found too; leaves fx does not look into (timm's untraceable layers) are traced on their own.
    """
    fam = get_family(family)
    scanner = _Scanner(net, fam)
    scanner.scan(net, "")
    sites = scanner.sites
    for (owner, owner_type, call, inplace), n in scanner.calls.items():
        sites.functional += [FunctionalSite(owner, owner_type, call, inplace) for _ in range(n)]
    sites.kept_gates += [f"{n} x {text}" if n > 1 else text for text, n in scanner.gates.items()]
    by_id: dict[int, ModuleSite] = {}
    for path, module in net.named_modules(remove_duplicate=False):
        if not path:
            continue
        if fam.matches_module(module):
            if id(module) in scanner.gate_modules:
                if id(module) not in by_id:
                    sites.kept_gates.append(f"{type(module).__name__}(x + 3) at {path}")
                by_id.setdefault(id(module), ModuleSite([], type(module).__name__))
                continue
            site = by_id.get(id(module))
            if site is None:
                site = by_id[id(module)] = ModuleSite([], type(module).__name__)
                sites.modules.append(site)
            site.paths.append(path)
        elif is_activation_class(type(module)):
            if id(module) not in by_id:
                by_id[id(module)] = ModuleSite([path], type(module).__name__)
                sites.other_activations[type(module).__name__] += 1
    return sites


def activation_nodes(gm: fx.GraphModule, family: str | ActivationFamily) -> list[fx.Node]:
    """The nodes of ``gm`` to replace when rewriting its own forward.

    Functional calls of the family (except ``relu6(x + 3)`` gates), and calls of modules of the family
    that work in place on an input read again later (their replacement must take over those reads).
    """
    fam = get_family(family)
    modules = dict(gm.named_modules())
    order = node_order(gm.graph)
    out = []
    for node in gm.graph.nodes:
        if node.op == "call_module":
            mod = modules.get(str(node.target))
            if (mod is not None and fam.matches_module(mod) and not is_hard_gate(node, modules)
                    and is_inplace(node, mod) and relies_on_mutation(node, order)):
                out.append(node)
        elif fam.matches_call(node) and not is_hard_gate(node, modules):
            out.append(node)
    return out


def traces_in_both_modes(module: nn.Module, **kwargs: Any) -> tuple[fx.GraphModule, fx.GraphModule]:
    """fx traces of ``module`` (``trace`` keyword arguments) in train and in eval mode.

    When both generate the same code, a GraphModule made from either behaves like ``module`` in both
    modes; when they differ, the forward depends on ``self.training``.
    """
    train_gm, eval_gm = _traces(module, **kwargs)
    return train_gm, eval_gm


def count_kinds(kinds: Iterable[str]) -> str:
    """``"16 ReLU, 1 ReLU6"`` from a list of class names (or a Counter of them)."""
    return ", ".join(f"{n} {k}" for k, n in Counter(kinds).most_common())
