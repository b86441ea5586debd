"""RobustBench's MeanSparse entries (Amini et al. 2024): where their operators sit, and their checkpoints.

A MeanSparse entry is its base network, built as harden builds the base entry, with MeanSparse
operators that harden's ``meansparse`` transform inserts at the sites RobustBench's code puts them
(its replay state: no data). The model records the transform as ``from_source``, so ``harden.load``
of a saved file replays it. Sites, per family:

* ``dm-wrn`` (DeepMind WRN; RobustBench's ``Meansparse_wrn_94_16.py``, ``Meansparse_wrn_70_16.py``):
  after ``batchnorm_0`` and ``batchnorm_1`` of every block (before their activations), on every block's
  output (after the residual add) and after the final ``batchnorm``;
* ``convnext`` (timm ConvNeXt; ``sparsified_model.add_custom_layer_imagenet``): before every block's MLP
  activation (``mlp.act``, channels last) and on every block's residual branch (after ``drop_path``).

RobustBench's operator ``R`` stores ``R.running_mean``, ``R.running_var``, ``R.threshold``,
``R.flag_update_statistics`` and ``R.batch_num`` (its ImageNet one also ``R.momentum`` and ``R.epsilon``,
which its forward never reads: dropped, like ``batch_num``). harden's operator at site ``P`` holds
``P.meansparse.mean`` (``running_mean``), ``P.meansparse.std`` (``sqrt(running_var)``) and
``P.meansparse.alpha`` (``threshold``), and the wrapped layer's own keys move to ``P.layer.*``. Its output,
``mean`` where ``|x - mean| < alpha * std`` else ``x``, is RobustBench's value for value (a threshold of 0:
the identity in both).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from harden.errors import HardenError
from harden.provenance import TransformEntry
from harden.sources.loading import strip_prefixes
from harden.sources.zoo.rb_archs import DMBlock

#: the meansparse transform's replay state for one operator
Site = dict[str, Any]


@dataclass(frozen=True)
class Operator:
    """One MeanSparse operator: harden's site, and the path of RobustBench's operator in its checkpoints."""

    site: Site
    checkpoint: str


def _site(path: str, module: nn.Module, channels: int, *, first: bool = False, dim: int = 1) -> Site:
    return {"path": path, "kind": type(module).__name__, "first": first, "channels": int(channels), "dim": dim,
            "ndim": 4}


def _dm_wrn(net: nn.Module) -> list[Operator]:
    """batchnorm_0/1 -> the block's meansparse_0/1, the block -> its meansparse_2, batchnorm -> meansparse_end."""
    layers, blocks = [], []
    for path, block in net.named_modules():
        if isinstance(block, DMBlock):
            for i in (0, 1):
                bn = getattr(block, f"batchnorm_{i}")
                layers.append(Operator(_site(f"{path}.batchnorm_{i}", bn, bn.num_features), f"{path}.meansparse_{i}"))
            blocks.append(Operator(_site(path, block, block.batchnorm_1.num_features), f"{path}.meansparse_2"))
    final = net.get_submodule("batchnorm")
    layers.append(Operator(_site("batchnorm", final, final.num_features), "meansparse_end"))
    return layers + blocks  # each block wrapped after the layers inside it, whose paths are then still theirs


def _convnext(net: nn.Module) -> list[Operator]:
    """mlp.act -> its Sequential's index 0 (before the GELU), drop_path -> index 1 (after it)."""
    from timm.models.convnext import ConvNeXtBlock

    out = []
    for path, block in net.named_modules():
        if isinstance(block, ConvNeXtBlock):
            if block.use_conv_mlp:
                raise HardenError(f"{path}: a ConvNeXt block with a convolutional MLP is not RobustBench's layout")
            act, branch = block.mlp.act, block.drop_path
            out.append(Operator(_site(f"{path}.mlp.act", act, block.mlp.fc1.out_features, first=True, dim=3),
                                f"{path}.mlp.act.0"))
            out.append(Operator(_site(f"{path}.drop_path", branch, block.conv_dw.out_channels), f"{path}.drop_path.1"))
    return out


_FAMILIES: dict[str, tuple[Callable[[nn.Module], list[Operator]], str]] = {
    "dm-wrn": (_dm_wrn, "after batchnorm_0 and batchnorm_1 of every block (before their activations), on every "
                        "block's output and after the final batchnorm"),
    "convnext": (_convnext, "before every block's MLP activation (mlp.act) and on every block's residual branch "
                            "(after drop_path, before the residual add)"),
}
FAMILIES = tuple(_FAMILIES)


def operators(family: str, net: nn.Module) -> list[Operator]:
    """The MeanSparse operators of ``family`` in the base network ``net`` (not yet inserted), in insertion order."""
    found = _FAMILIES[family][0](net)
    if not found:
        raise HardenError(f"the network has none of the {family} MeanSparse sites; is it the entry's base network?")
    return found


def transform_entry(entry_name: str, family: str, ops: list[Operator]) -> TransformEntry:
    """The ``meansparse`` transform at ``ops``, as the source records it (``from_source``: part of the entry)."""
    from harden.transforms import get_transform

    n = len(ops)
    return TransformEntry(
        name="meansparse", provider=get_transform("meansparse").provider, config={},
        state={"sites": [op.site for op in ops]}, from_source=True,
        changes=[f"{n} MeanSparse operators at the sites of RobustBench's {entry_name}: {_FAMILIES[family][1]}",
                 "per-channel mean, std and threshold alpha from the checkpoint (running_mean, sqrt(running_var), "
                 "threshold); without one every operator is the identity",
                 "note: its gradient is zero where it replaces a value by the mean; evaluate it with "
                 "straight-through gradients (BPDA) as well"])


# ------------------------------------------------------------------------------------------- checkpoints


def wrapped(key: str, sites: Iterable[str]) -> str:
    """``key`` of the base network as it reads with every site wrapped (``P.x`` -> ``P.layer.x`` for a site ``P``)."""
    sites = set(sites)
    parts = key.split(".")
    out = []
    for i, part in enumerate(parts):
        out.append(part)
        if i < len(parts) - 1 and ".".join(parts[: i + 1]) in sites:
            out.append("layer")
    return ".".join(out)


def checkpoint_state(state: dict[str, torch.Tensor], ops: list[Operator], base: str) -> dict[str, torch.Tensor]:
    """RobustBench's checkpoint of a MeanSparse entry in harden's keys (see the module's docstring)."""
    state = strip_prefixes(state, ())
    if not any(f"{op.checkpoint}.running_mean" in state for op in ops):
        raise HardenError(f"the checkpoint holds no MeanSparse operators ('{ops[0].checkpoint}.running_mean' ...); "
                          f"is it the checkpoint of the base entry? load that as robustbench:{base}")
    sites = [op.site["path"] for op in ops]
    out: dict[str, torch.Tensor] = {}
    for op in ops:
        out.update(_operator_state(state, op, wrapped(op.site["path"], sites)))
    out.update({wrapped(key, sites): value for key, value in state.items()})
    return out


#: what RobustBench's operators store besides their statistics and threshold, never read by their forward
_UNUSED = ("batch_num", "momentum", "epsilon")


def _operator_state(state: dict[str, torch.Tensor], op: Operator, path: str) -> dict[str, torch.Tensor]:
    """Pop the keys of RobustBench's operator ``op.checkpoint`` from ``state``; harden's buffers at ``path``."""
    key = op.checkpoint
    flag = state.pop(f"{key}.flag_update_statistics", None)
    if flag is not None and bool(flag.any()):
        raise HardenError(f"the checkpoint's MeanSparse operator '{key}' is still collecting statistics "
                          "(flag_update_statistics is set, so RobustBench's forward would change them on every "
                          "call); save it after its statistics pass")
    for unused in _UNUSED:
        state.pop(f"{key}.{unused}", None)
    if any(f"{key}.{name}" not in state for name in ("running_mean", "running_var", "threshold")):
        return {}  # the strict load names what is missing
    var = state.pop(f"{key}.running_var")
    return {f"{path}.meansparse.mean": state.pop(f"{key}.running_mean"), f"{path}.meansparse.std": var.sqrt(),
            f"{path}.meansparse.alpha": state.pop(f"{key}.threshold")}
