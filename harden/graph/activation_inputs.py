"""The layers whose output goes into an activation: where an operator placed before activations goes.

:func:`find_activation_inputs` traces a network with torch.fx (shapes propagated) and reports every
selected layer (by default every BatchNorm) whose output only activations read, possibly through
identities and dropout: ``act(bn(x))``, ``F.relu(self.bn1(out))``, ``Sequential(conv, bn, ReLU)``. A layer
whose output something else reads too (``bn2(y) + shortcut``, a returned value) is reported apart, as
are normalization layers that apply their own activation (timm's ``BatchNormAct2d``: ``bn.act``).

Analysis only: nothing here edits the network (``plugins/meansparse.py`` does).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from torch import fx, nn

from harden.graph.activation_families import FAMILY_NAMES, family_of_call, family_of_module
from harden.graph.activations import call_name
from harden.graph.tracing import node_module_path, shape_of, trace_with_shapes

#: a layer chosen by path and module
Selector = Callable[[str, nn.Module], bool]

PASS_THROUGH: tuple[type[nn.Module], ...] = (nn.Identity, nn.modules.dropout._DropoutNd)


def is_batchnorm(path: str, module: nn.Module) -> bool:
    """The default selector: every BatchNorm layer (1-D, 2-D, 3-D, synchronized, and subclasses)."""
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


def is_activation_module(module: nn.Module | None) -> bool:
    """Whether ``module`` is an activation of one of the replaceable families (relu, gelu, silu, ...)."""
    fam = family_of_module(module) if module is not None else None
    return fam is not None and fam.name in FAMILY_NAMES


@dataclass
class ActivationInput:
    """A layer whose output only activations read; ``shape``: that output for one image."""

    path: str
    kind: str
    shape: tuple[int, ...]
    readers: list[str] = field(default_factory=list)


@dataclass
class ActivationInputs:
    """What :func:`find_activation_inputs` found: the layers, the fused ones, and those read elsewhere too."""

    inputs: list[ActivationInput] = field(default_factory=list)
    fused: list[ActivationInput] = field(default_factory=list)  # path: the layer's own ``act``
    shared: list[str] = field(default_factory=list)


def _is_pass_through(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    return node.op == "call_module" and isinstance(modules.get(str(node.target)), PASS_THROUGH)


def _is_activation(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return is_activation_module(modules.get(str(node.target)))
    fam = family_of_call(node) if node.op in ("call_function", "call_method") else None
    return fam is not None and fam.name in FAMILY_NAMES


def _readers(node: fx.Node, modules: dict[str, nn.Module]) -> list[fx.Node]:
    """The nodes that read ``node``'s value, looking through identities and dropout."""
    out: list[fx.Node] = []
    for user in node.users:
        out += _readers(user, modules) if _is_pass_through(user, modules) else [user]
    return out


def _describe(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return f"{type(modules.get(str(node.target))).__name__} {node.target}"
    if node.op == "output":
        return "the network's output"
    return f"{call_name(node)} in {node_module_path(node) or '<root>'}"


def _fused_layers(net: nn.Module, select: Selector) -> dict[str, str]:
    """Selected normalization layers that apply their own activation module ``act``: path -> its class name."""
    out = {}
    for path, module in net.named_modules():
        act = getattr(module, "act", None)
        if path and select(path, module) and isinstance(act, nn.Module) and is_activation_module(act):
            out[path] = f"{type(act).__name__} {path}.act"
    return out


def find_activation_inputs(net: nn.Module, input_size: Sequence[int],
                           select: Selector = is_batchnorm) -> ActivationInputs:
    """The layers chosen by ``select`` whose output feeds activations only (see the module docstring).

    ``input_size`` is the (C, H, W) of the tensor ``net`` takes. Raises HardenError when ``net`` cannot be
    traced.
    """
    traced = trace_with_shapes(net, input_size)
    modules = dict(net.named_modules())
    fused = _fused_layers(net, select)
    found = ActivationInputs()
    calls: dict[str, list[fx.Node]] = {}
    for node in traced.gm.graph.nodes:
        module = modules.get(str(node.target)) if node.op == "call_module" else None
        path = str(node.target)
        if module is not None and not is_activation_module(module) and select(path, module):
            calls.setdefault(path, []).append(node)
    for path, nodes in calls.items():
        shape = shape_of(nodes[0])
        if shape is None:
            continue
        kind = type(modules[path]).__name__
        if path in fused:
            found.fused.append(ActivationInput(f"{path}.act", kind, tuple(shape[1:]), [fused[path]]))
            continue
        readers = [r for node in nodes for r in _readers(node, modules)]
        if not any(_is_activation(r, modules) for r in readers):
            continue
        others = [r for r in readers if not _is_activation(r, modules)]
        if others:
            found.shared.append(f"{path} (also read by {_describe(others[0], modules)})")
            continue
        found.inputs.append(ActivationInput(path, kind, tuple(shape[1:]), [_describe(r, modules) for r in readers]))
    return found
