"""last-stage-width: keep a fraction of the last stage's channels (Huang et al., NeurIPS 2021).

Huang et al. ("Exploring Architectural Ingredients of Adversarially Robust Deep Neural Networks")
found that a narrower last stage makes wide ResNets more robust (WRN-34-R). This transform narrows
the last stage of any CNN: the stage is found with :mod:`harden.graph.stages` (the layers at the
final resolution level), and torch-pruning's dependency graph removes channels consistently from
every layer coupled to them: residual adds and concatenations, norms, squeeze-excitation gates and
the input of the layers after the stage (the classifier).

Channels are chosen per coupled group by L1 magnitude: the sum of ``|w|`` over the filters that
produce the channel (every convolution/linear layer of the group that outputs it). Grouped
convolutions keep the same channels in every group. The removed channels are recorded in the
recipe, so :meth:`LastStageWidth.replay` redoes the same surgery on a fresh model without
recomputing importance.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from harden.errors import HardenError
from harden.graph import trace_with_shapes
from harden.graph.stages import Head, Stage, find_head, find_stages
from harden.graph.tracing import eval_mode
from harden.model import HardenedModel
from harden.transforms import Applied, Param, Transform, parse_number

_CONV = nn.modules.conv._ConvNd
# Layers that mix channels: the width of their output is their own, not their input's.
_MIXING = (nn.modules.conv._ConvNd, nn.Linear, nn.Embedding, nn.MultiheadAttention, nn.RNNBase)
_MAX_GROUP_LINES = 10


def _ratio_problem(value: float) -> str | None:
    if not (0 < value <= 1):  # also false for NaN
        return "the fraction of channels kept must be in (0, 1], e.g. 0.5"
    return None


def _model_name(model: HardenedModel) -> str:
    return str(model.recipe["model"].get("spec") or model.recipe["model"].get("name"))


def find_last_stage(model: HardenedModel) -> tuple[Stage, Head]:
    """The stage whose width this transform changes, and the model's head; HardenError if none."""
    traced = trace_with_shapes(model.net, model.net_input_size())
    head = find_head(traced)
    stages = find_stages(traced, head=head)
    name = _model_name(model)
    if not stages:
        raise HardenError(f"{name} has no convolutional stages; last-stage-width applies to CNNs")
    stage = stages[-1]
    if stage.tokens:
        raise HardenError(
            f"{name} has no convolutional stages (after {stage.convs[0]} it works on token sequences, "
            "as a vision transformer does); last-stage-width applies to CNNs")
    return stage, head


def _fake_leftovers(net: nn.Module) -> list[nn.Module]:
    """Modules that kept a fake tensor from a traced forward (a cache written during forward)."""
    from torch._subclasses.fake_tensor import FakeTensor

    return [m for m in net.modules()
            if any(isinstance(v, FakeTensor) for d in (m.__dict__, m._buffers, m._parameters) for v in d.values())]


def _dependency_graph(net: nn.Module, input_size: tuple[int, ...]) -> Any:
    """torch-pruning's dependency graph of ``net`` (traced in eval mode; train/eval modes are kept).

    The graph only needs the autograd structure of one forward pass, so it is first traced on fake
    tensors (no computation); a model whose forward fails on them, or writes a fake tensor into a
    module, is restored and traced again on real zeros.
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

    saved = {m: (dict(m.__dict__), dict(m._buffers), dict(m._parameters)) for m in net.modules()}
    with eval_mode(net), torch.enable_grad():
        try:
            dg = build(fake=True)
            if not _fake_leftovers(net):
                return dg
        except Exception:
            pass
        for m in _fake_leftovers(net):
            attrs, buffers, parameters = saved[m]
            for key in [k for k in m.__dict__ if k not in attrs]:
                del m.__dict__[key]
            m.__dict__.update(attrs)
            m._buffers.clear()
            m._buffers.update(buffers)
            m._parameters.clear()
            m._parameters.update(parameters)
        try:
            return build(fake=False)
        except Exception as exc:
            raise HardenError(
                f"torch-pruning cannot build the channel dependency graph of this model ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:160] if str(exc) else ''})") from exc


@dataclass
class _Plan:
    """One coupled group of the last stage: its root layer and the channels to remove."""

    root: str
    channels: int
    producers: list[str]
    removed: list[int]
    channel_groups: int = 1

    @property
    def kept(self) -> int:
        return self.channels - len(self.removed)


def _filter_l1(layer: nn.Module, idxs: list[int]) -> torch.Tensor | None:
    """L1 norm of the filters producing output channels ``idxs`` of a conv/linear layer."""
    weight = getattr(layer, "weight", None)
    if not isinstance(weight, torch.Tensor) or not isinstance(layer, (_CONV, nn.Linear)):
        return None
    w = weight.detach()
    if isinstance(layer, _CONV) and layer.transposed:
        w = w.transpose(0, 1)
    return torch.linalg.vector_norm(w.flatten(1).float(), ord=1, dim=1)[idxs].cpu()


def _channel_groups(dg: Any, layer: nn.Module, out: bool) -> int:
    if isinstance(layer, _CONV) and layer.groups == layer.out_channels:
        return 1  # depthwise: input and output channels are pruned together
    pruner = dg.get_pruner_of_module(layer)
    if pruner is None:
        return 1
    return int(pruner.get_out_channel_groups(layer) if out else pruner.get_in_channel_groups(layer))


def _keep_count(ratio: float, n: int) -> int:
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
        scan.channel_groups = max(scan.channel_groups, _channel_groups(dg, target, out))
        if not (out and isinstance(target, _MIXING)):
            continue
        importance = torch.zeros(channels)
        l1 = _filter_l1(target, list(item.idxs))
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


def coupled_groups(dg: Any, net: nn.Module, layer_paths: Sequence[str]) -> Iterator[tuple[str, int, Any, GroupScan]]:
    """Each coupled channel group of the conv/linear layers in ``layer_paths``, once, in their order:
    ``(root path, output channels, torch-pruning group, scan)``."""
    paths = {m: name for name, m in net.named_modules()}
    done: set[nn.Module] = set()
    for path in layer_paths:
        layer = net.get_submodule(path)
        if not isinstance(layer, (_CONV, nn.Linear)) or layer in done or layer not in dg.module2node:
            continue
        pruner = dg.get_pruner_of_module(layer)
        channels = int(pruner.get_out_channels(layer))
        group = dg.get_pruning_group(layer, pruner.prune_out_channels, list(range(channels)))
        scan = scan_group(dg, group, channels, paths)
        done.update(scan.modules)
        yield path, channels, group, scan


def _plan_groups(dg: Any, net: nn.Module, stage: Stage, ratio: float) -> tuple[list[_Plan], list[str]]:
    """Group the last stage's channel-mixing layers by coupling and choose the channels to remove."""
    inside = set(stage.layers)
    plans: list[_Plan] = []
    skipped: list[str] = []
    for path, channels, _group, scan in coupled_groups(dg, net, stage.layers):
        outside = [name for name in scan.producers if name not in inside]
        if outside:
            skipped.append(f"{path} ({channels} channels, coupled to {outside[0]} outside the last stage)")
            continue
        ch_groups = scan.channel_groups
        if channels % ch_groups:
            raise HardenError(f"{path}: {channels} channels do not split into {ch_groups} equal channel groups")
        per_group = channels // ch_groups
        keep = _keep_count(ratio, per_group)
        if keep == per_group:
            continue
        removed = choose_removed(scan.importance(), ch_groups, keep)
        producers = sorted(scan.producers, key=stage.layers.index)
        plans.append(_Plan(path, channels, producers, removed, ch_groups))
    return plans, skipped


def _prune(dg: Any, net: nn.Module, root: str, channels: int, removed: list[int],
           who: str = "last-stage-width") -> None:
    """Remove output channels ``removed`` of layer ``root`` and of everything coupled to it
    (``who`` names the transform in error messages)."""
    try:
        layer = net.get_submodule(root)
    except AttributeError:
        raise HardenError(f"{who}: layer '{root}' is missing; the recorded state does not fit "
                          "this model") from None
    pruner = dg.get_pruner_of_module(layer) if layer in dg.module2node else None
    if pruner is None or pruner.get_out_channels(layer) != channels or (removed and max(removed) >= channels):
        raise HardenError(f"{who}: layer '{root}' does not have the {channels} output channels "
                          "the recorded state expects; the state does not fit this model")
    group = dg.get_pruning_group(layer, pruner.prune_out_channels, removed)
    if not dg.check_pruning_group(group):
        raise HardenError(f"{who}: removing {len(removed)} of {channels} channels of '{root}' would "
                          "leave a coupled layer without channels")
    group.prune(record_history=False)


def _layer_list(names: list[str]) -> str:
    if len(names) <= 3:
        return ", ".join(names)
    return f"{names[0]}, {names[1]}, ... {names[-1]} ({len(names)} layers)"


def _in_width(layer: nn.Module) -> int | None:
    for attr in ("in_channels", "in_features"):
        if hasattr(layer, attr):
            return int(getattr(layer, attr))
    return None


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class LastStageWidth(Transform):
    """Narrow the last stage of a CNN to a fraction of its channels, keeping the largest-L1 channels."""

    name = "last-stage-width"
    summary = "keep a fraction R of the last stage's channels (Huang et al. 2021, WRN-34-R)"
    params = (
        Param("ratio", parse_number, default=0.5, help="fraction of channels kept, 0 < R <= 1",
              check=_ratio_problem),
    )

    def apply(self, model: HardenedModel) -> Applied:
        ratio = float(self.config["ratio"])
        stage, head = find_last_stage(model)
        changes = [f"last {stage.describe()}"]
        if ratio == 1:
            return Applied([*changes, "ratio 1: every channel is kept, nothing to do"], {"groups": []})
        net = model.net
        following = [p for p in head.layers if p not in stage.layers]
        widths = {p: _in_width(net.get_submodule(p)) for p in following}
        params_before = _params(model)
        dg = _dependency_graph(net, model.net_input_size())
        plans, skipped = _plan_groups(dg, net, stage, ratio)
        for plan in plans:
            _prune(dg, net, plan.root, plan.channels, plan.removed)
        for i, plan in enumerate(plans):
            if i == _MAX_GROUP_LINES and len(plans) > _MAX_GROUP_LINES + 1:
                rest = plans[i:]
                changes.append(f"... {len(rest)} more groups: {sum(p.channels for p in rest)} -> "
                               f"{sum(p.kept for p in rest)} channels in all")
                break
            grouped = f", same channels in each of {plan.channel_groups} groups" if plan.channel_groups > 1 else ""
            changes.append(f"{_layer_list(plan.producers)}: {plan.channels} -> {plan.kept} channels{grouped}")
        changes += [f"kept {s}" for s in skipped]
        for path, before in widths.items():
            after = _in_width(net.get_submodule(path))
            if before is not None and after != before:
                changes.append(f"{path}: input {before} -> {after}")
        if not plans:
            changes.append(f"ratio {ratio:g} removes no channel (groups too small)")
        params_after = _params(model)
        changes.append(f"parameters {params_before:,} -> {params_after:,} "
                       f"({100 * (params_after - params_before) / max(params_before, 1):+.1f}%)")
        state = {"groups": [{"root": p.root, "channels": p.channels, "removed": p.removed} for p in plans]}
        return Applied(changes, state)

    def replay(self, model: HardenedModel, state: dict[str, Any]) -> None:
        groups = state.get("groups")
        if groups is None:
            raise HardenError("last-stage-width: the recipe has no recorded channel choice to replay")
        if not groups:
            return
        dg = _dependency_graph(model.net, model.net_input_size())
        for entry in groups:
            _prune(dg, model.net, str(entry["root"]), int(entry["channels"]), [int(i) for i in entry["removed"]])
