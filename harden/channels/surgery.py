"""Channel surgery on torch-pruning's dependency graph: removing channels from a coupled group.

The channels to remove come from :mod:`~harden.channels.analysis` (or from a recorded state, on
replay); torch-pruning removes them from every layer coupled to them. Growing channels is
:mod:`~harden.channels.growth`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from harden.errors import HardenError


def root_layer(dg: Any, net: nn.Module, root: str, channels: int, who: str, fits: bool = True) -> nn.Module:
    """Layer ``root`` of ``net``, checked to have the ``channels`` output channels a recorded state expects
    (and ``fits``: the caller's own check of the state); a HardenError naming ``who`` otherwise."""
    try:
        layer = net.get_submodule(root)
    except AttributeError:
        raise HardenError(f"{who}: layer '{root}' is missing; the recorded state does not fit "
                          "this model") from None
    pruner = dg.get_pruner_of_module(layer) if layer in dg.module2node else None
    if pruner is None or pruner.get_out_channels(layer) != channels or not fits:
        raise HardenError(f"{who}: layer '{root}' does not have the {channels} output channels "
                          "the recorded state expects; the state does not fit this model")
    return layer


def remove_channels(dg: Any, net: nn.Module, root: str, channels: int, removed: list[int],
                    who: str = "last-stage-width") -> None:
    """Remove output channels ``removed`` of layer ``root`` and of everything coupled to it
    (``who`` names the transform in error messages)."""
    layer = root_layer(dg, net, root, channels, who, fits=not (removed and max(removed) >= channels))
    pruner = dg.get_pruner_of_module(layer)
    group = dg.get_pruning_group(layer, pruner.prune_out_channels, removed)
    if not dg.check_pruning_group(group):
        raise HardenError(f"{who}: removing {len(removed)} of {channels} channels of '{root}' would "
                          "leave a coupled layer without channels")
    group.prune(record_history=False)
