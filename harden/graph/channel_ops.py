"""Channel-rearranging operations that torch-pruning's channel removal cannot keep consistent.

Width transforms remove channels through torch-pruning's dependency graph. Two common structures
defeat it: a *channel shuffle* (ShuffleNet: the channels are reshaped into groups, transposed and
flattened back, so channel k of one layer feeds channel j != k of the next) and a *fixed channel
split* (MixNet's mixed-kernel convolutions, ``torch.split`` with sizes stored in the module, then a
convolution per part). This module finds them in a traced graph; a network that has one is narrowed
by following its channels instead (:mod:`harden.channels.flow`). Analysis only: nothing here edits a
model.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
from torch import fx, nn

from harden.graph.tracing import TracedNet, node_module_path, shape_of

_RESHAPES = {"view", "reshape", torch.reshape}
_TRANSPOSES = {"transpose", "permute", torch.transpose, torch.permute, "swapaxes", torch.swapaxes}
_SPLITS = {"split", "chunk", "tensor_split", torch.split, torch.chunk, torch.tensor_split}


@dataclass(frozen=True)
class ChannelOp:
    """One channel-rearranging operation: its kind (``shuffle`` or ``split``) and where it is."""

    kind: str
    where: str

    def describe(self) -> str:
        if self.kind == "shuffle":
            return f"a channel shuffle at {self.where} (channels regrouped by reshape and transpose, as in ShuffleNet)"
        return (f"a fixed channel split at {self.where} (channels cut into parts of stored sizes, as in "
                "MixNet's mixed-kernel convolutions)")


def _target(node: fx.Node) -> object:
    return node.target if node.op in ("call_method", "call_function") else None


def _where(node: fx.Node) -> str:
    path = node_module_path(node)
    return f"'{path}'" if path else f"node '{node.name}'"


def _is_shuffle(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return type(modules.get(str(node.target))).__name__ == "ChannelShuffle"
    if _target(node) not in _TRANSPOSES:
        return False
    src = node.args[0] if node.args else None
    if not isinstance(src, fx.Node) or _target(src) not in _RESHAPES:
        return False
    before, grouped = shape_of(src.args[0]) if src.args else None, shape_of(src)
    # (N, C, H, W) viewed as (N, G, C/G, H, W): one more dimension, the channels cut into groups
    return bool(before and grouped and len(before) == 4 and len(grouped) == 5 and grouped[1] * grouped[2] == before[1])


def _is_channel_split(node: fx.Node) -> bool:
    if _target(node) not in _SPLITS:
        return False
    dim = node.kwargs.get("dim", node.args[2] if len(node.args) > 2 else 0)
    shape = shape_of(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) else None
    if shape is None or len(shape) != 4 or dim not in (1, -3):
        return False
    # a split only matters when its parts go separate ways (each to its own layer), not straight back together
    users = [u for u in node.users if u.op == "call_function" and u.target is operator.getitem]
    return len(users) > 1


def find_channel_ops(traced: TracedNet) -> list[ChannelOp]:
    """Channel shuffles and fixed channel splits of a traced network, in graph order."""
    modules = dict(traced.gm.named_modules())
    found = []
    for node in traced.gm.graph.nodes:
        if _is_shuffle(node, modules):
            found.append(ChannelOp("shuffle", _where(node)))
        elif _is_channel_split(node):
            found.append(ChannelOp("split", _where(node)))
    return found
