"""Channel analysis on torch-pruning's dependency graph: coupled channel groups, L1 importance, widths.

Shared by the width transforms (``last-stage-width``, ``stage-widths``): which layers' channels are
coupled (residual adds, concatenations, norms, the next layer's input) comes from torch-pruning; this
module scores the channels of each coupled group, chooses the ones a narrowing removes, and reports
layer widths and how they changed. Nothing here edits a model: removing channels is
:mod:`~harden.channels.surgery`, growing them :mod:`~harden.channels.growth`. Networks that shuffle
or split their channels (ShuffleNet, MixNet), which torch-pruning does not follow, go through
:mod:`~harden.channels.flow_groups` instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from harden.errors import HardenError
from harden.graph.tracing import eval_mode, prefer_fake, preserve_state

# layers whose output channels mix their inputs: the filters that define a channel's importance
_MIXING = (nn.modules.conv._ConvNd, nn.Linear, nn.Embedding, nn.MultiheadAttention, nn.RNNBase)

CONV = nn.modules.conv._ConvNd
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def dependency_graph(net: nn.Module, input_size: tuple[int, ...]) -> Any:
    """torch-pruning's dependency graph of ``net`` (traced in eval mode; train/eval modes are kept).

    The graph only needs the autograd structure of one forward pass on zeros; for large inputs it is
    traced on fake tensors (see :func:`harden.graph.tracing.prefer_fake`), falling back to real zeros
    when an op has no fake kernel. Module attributes a forward writes are restored afterwards.
    """
    import torch_pruning as tp
    from torch._subclasses.fake_tensor import FakeTensorMode

    dev = next((p.device for p in net.parameters()), torch.device("cpu"))

    def build(fake: bool) -> Any:
        # An input that requires grad gives every op a grad_fn even when the weights are frozen.
        # A list: torch-pruning calls net(*example_inputs) (a bare tensor would be split by rows).
        example = torch.zeros(1, *input_size, device=dev, requires_grad=True)
        if not fake:
            return tp.DependencyGraph().build_dependency(net, example_inputs=[example], verbose=False)
        with FakeTensorMode(allow_non_fake_inputs=True) as mode:
            return tp.DependencyGraph().build_dependency(net, example_inputs=[mode.from_tensor(example)],
                                                         verbose=False)

    with preserve_state(net), eval_mode(net), torch.enable_grad():
        if prefer_fake(input_size, net):
            try:
                return build(fake=True)
            except Exception:  # an op without a fake kernel: trace on real zeros
                pass
        try:
            return build(fake=False)
        except Exception as exc:
            raise HardenError(
                f"torch-pruning cannot build the channel dependency graph of this model ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:160] if str(exc) else ''})") from exc


def filter_l1(layer: nn.Module, idxs: list[int]) -> torch.Tensor | None:
    """L1 norm of the filters producing output channels ``idxs`` of a conv/linear layer."""
    weight = getattr(layer, "weight", None)
    if not isinstance(weight, torch.Tensor) or not isinstance(layer, (CONV, nn.Linear)):
        return None
    w = weight.detach()
    if isinstance(layer, CONV) and layer.transposed:
        w = w.transpose(0, 1)
    return torch.linalg.vector_norm(w.flatten(1).float(), ord=1, dim=1)[idxs].cpu()


def channel_groups(dg: Any, layer: nn.Module, out: bool) -> int:
    """How many equal groups a layer's output (``out``) or input channels split into (grouped convs, norms)."""
    if isinstance(layer, CONV) and layer.groups == layer.out_channels:
        return 1  # depthwise: input and output channels are pruned together
    pruner = dg.get_pruner_of_module(layer)
    if pruner is None:
        return 1
    return int(pruner.get_out_channel_groups(layer) if out else pruner.get_in_channel_groups(layer))


def keep_count(ratio: float, n: int) -> int:
    """How many of ``n`` channels a fraction ``ratio`` keeps: rounded half up, at least one."""
    return max(1, min(n, math.floor(ratio * n + 0.5)))


@dataclass
class GroupScan:
    """The layers of one coupled group that output its channels, with their L1 filter norms."""

    producers: list[str]            # module paths of the conv/linear layers that output the channels
    modules: list[nn.Module]        # those layers
    l1: list[torch.Tensor]          # per producer: L1 norm of its filters, indexed by root channel
    channel_groups: int = 1         # the channels split into this many equal groups (grouped convs, norms)

    def importance(self, include: set[str] | None = None) -> torch.Tensor:
        """Summed L1 importance per root channel, over the producers (or those in ``include``)."""
        total = torch.zeros_like(self.l1[0]) if self.l1 else torch.zeros(0)
        for name, l1 in zip(self.producers, self.l1):
            if include is None or name in include:
                total = total + l1
        return total


def scan_group(dg: Any, group: Any, channels: int, paths: dict[nn.Module, str]) -> GroupScan:
    """Find the producers of a torch-pruning group rooted at ``channels`` output channels.

    ``paths`` maps the network's modules to their names (``{m: n for n, m in net.named_modules()}``).
    """
    scan = GroupScan([], [], [])
    for item in group:
        target = item.dep.target.module
        if not isinstance(target, nn.Module):
            continue
        out = dg.is_out_channel_pruning_fn(item.dep.handler)
        scan.channel_groups = max(scan.channel_groups, channel_groups(dg, target, out))
        if not (out and isinstance(target, _MIXING)):
            continue
        importance = torch.zeros(channels)
        l1 = filter_l1(target, list(item.idxs))
        roots = [(i, r) for i, r in enumerate(item.root_idxs) if r is not None]
        if l1 is not None and roots:
            importance.index_add_(0, torch.tensor([r for _, r in roots]), l1[[i for i, _ in roots]])
        scan.producers.append(paths.get(target, "?"))
        scan.modules.append(target)
        scan.l1.append(importance)
    return scan


def choose_removed(importance: torch.Tensor, channel_groups: int, keep: int) -> list[int]:
    """The channels to remove so that each of ``channel_groups`` equal groups keeps its ``keep``
    largest-importance offsets (the same offsets in every group), sorted."""
    per_group = importance.numel() // channel_groups
    order = torch.argsort(importance.view(channel_groups, per_group).sum(0), descending=True, stable=True)
    removed_offsets = sorted(order[keep:].tolist())
    return [g * per_group + o for g in range(channel_groups) for o in removed_offsets]


def plan_removed(scan: GroupScan, path: str, channels: int, ratio: float) -> list[int]:
    """The channels of a coupled group to remove so that it keeps ``ratio`` of them (the largest-L1
    ones, the same offsets in each channel group), sorted; [] when it keeps them all."""
    if channels % scan.channel_groups:
        raise HardenError(f"{path}: {channels} channels do not split into {scan.channel_groups} equal "
                          "channel groups")
    per_group = channels // scan.channel_groups
    keep = keep_count(ratio, per_group)
    return [] if keep == per_group else choose_removed(scan.importance(), scan.channel_groups, keep)


def coupled_groups(dg: Any, net: nn.Module, layer_paths: Sequence[str]) -> Iterator[tuple[str, int, Any, GroupScan]]:
    """Each coupled channel group of the conv/linear layers in ``layer_paths``, once, in their order:
    ``(root path, output channels, torch-pruning group, scan)``."""
    paths = {m: name for name, m in net.named_modules()}
    done: set[nn.Module] = set()
    for path in layer_paths:
        layer = net.get_submodule(path)
        if not isinstance(layer, (CONV, nn.Linear)) or layer in done or layer not in dg.module2node:
            continue
        pruner = dg.get_pruner_of_module(layer)
        channels = int(pruner.get_out_channels(layer))
        group = dg.get_pruning_group(layer, pruner.prune_out_channels, list(range(channels)))
        scan = scan_group(dg, group, channels, paths)
        done.update(scan.modules)
        yield path, channels, group, scan


def param_count(model: nn.Module) -> int:
    """The number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


def layer_names(names: list[str]) -> str:
    """Up to three layer names, or the first two, the last and the count."""
    if len(names) <= 3:
        return ", ".join(names)
    return f"{names[0]}, {names[1]}, ... {names[-1]} ({len(names)} layers)"


def param_change(before: int, after: int) -> str:
    """``parameters 1,000 -> 800 (-20.0%)``."""
    return f"parameters {before:,} -> {after:,} ({100 * (after - before) / max(before, 1):+.1f}%)"


def is_channel_norm(layer: nn.Module) -> bool:
    """A norm layer with one entry per channel (a LayerNorm only when it normalises over channels)."""
    if isinstance(layer, nn.LayerNorm):
        return len(layer.normalized_shape) == 1
    return isinstance(layer, _NORMS)


def layer_width(layer: nn.Module, dim: str) -> int:
    """A layer's width: ``out`` or ``in`` channels of a conv/linear layer, ``chan`` of a channel norm."""
    if dim == "out":
        return int(layer.out_channels if isinstance(layer, CONV) else layer.out_features)
    if dim == "in":
        return int(layer.in_channels if isinstance(layer, CONV) else layer.in_features)
    if isinstance(layer, nn.GroupNorm):
        return int(layer.num_channels)
    if isinstance(layer, nn.LayerNorm):
        return int(layer.normalized_shape[0])
    return int(layer.num_features)


def layer_widths(net: nn.Module) -> dict[str, tuple[int | None, int | None]]:
    """(in, out) widths of the conv/linear layers and the channel count of the norms."""
    found: dict[str, tuple[int | None, int | None]] = {}
    for name, m in net.named_modules():
        if isinstance(m, CONV):
            found[name] = (int(m.in_channels), int(m.out_channels))
        elif isinstance(m, nn.Linear):
            found[name] = (int(m.in_features), int(m.out_features))
        elif is_channel_norm(m):
            found[name] = (None, layer_width(m, "chan"))
    return found


def width_changes(before: dict[str, tuple[int | None, int | None]],
                  after: dict[str, tuple[int | None, int | None]]) -> list[str]:
    """One line per layer whose width changed between two :func:`layer_widths`."""
    lines = []
    for name, (in_b, out_b) in before.items():
        in_a, out_a = after.get(name, (in_b, out_b))
        parts = []
        if in_b is not None and in_a != in_b:
            how = "new input columns zero" if in_a > in_b else f"{in_b - in_a} inputs removed"
            parts.append(f"in {in_b} -> {in_a} ({how})")
        if out_a != out_b:
            if in_b is None:
                what = f"{out_a - out_b} new, gamma 1 beta 0" if out_a > out_b else f"{out_b - out_a} removed"
                parts.append(f"{out_b} -> {out_a} channels ({what})")
            else:
                what = f"{out_a - out_b} new filters" if out_a > out_b else f"{out_b - out_a} filters removed"
                parts.append(f"out {out_b} -> {out_a} ({what})")
        if parts:
            lines.append(f"{name}: {', '.join(parts)}")
    return lines
