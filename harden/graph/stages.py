"""Grouping a CNN's layers into stages by resolution level, and finding its head.

A *resolution level* is the number of downsampling points (see :mod:`harden.graph.downsampling`)
a feature map has gone through: the input is level 0, the output of point ``k`` is level ``k + 1``.
Every graph node gets the highest level among its inputs, raised to ``k + 1`` if it is an operation
of point ``k``. A *stage* is a level that holds at least one convolution, with the layers of that
level in graph order.

Two refinements make stages match how networks are built:

- the first convolution of a downsampling block belongs to the next stage although its output is
  still at the higher resolution: a conv whose output only feeds (through norms, activations,
  padding) the strided convolutions of the next point, when that strided conv is depthwise (the
  expansion before a MobileNet block's strided depthwise conv) or the block input also goes
  straight to that point through a shortcut (the 1x1 reduction before a ResNet bottleneck's
  strided 3x3). A plain conv before a strided conv (All-CNN) and the layers before a strided
  *pooling* (VGG, DenseNet transitions) stay in their own stage.
- the *head* (everything after the global pooling that never merges back into the feature path:
  MobileNetV3's ``conv_head``, VGG's hidden linear layers, the classifier) belongs to no stage.
  Squeeze-excitation pools merge back (``x * gate``), so they stay inside their stage.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import fx, nn

from harden.graph.downsampling import DownsamplingPoint, find_downsampling_points
from harden.graph.tracing import TracedNet, _is_global_pool, shape_of

_CONV = nn.modules.conv._ConvNd
_MIXING = (nn.modules.conv._ConvNd, nn.Linear)
_RESIDUAL_FUNCTIONS = {torch.add, torch.cat, torch.concat, operator.add, operator.iadd}


@dataclass
class Head:
    """The layers after the global pooling of the feature path (the classifier included)."""

    pool: str | None                                   # node name of the global pooling, if any
    layers: list[str] = field(default_factory=list)    # module paths after the pooling, graph order
    classifier: str | None = None                      # the last conv/linear module: produces the logits


@dataclass
class Stage:
    """The layers of one resolution level that holds convolutions."""

    index: int                      # 0, 1, ... among the stages, from the input to the output
    level: int                      # resolution level: downsampling points passed before it
    size: tuple[int, int]           # spatial size (H, W) of the level's feature maps
    entry: DownsamplingPoint | None  # the point that starts the level (None for level 0)
    layers: list[str] = field(default_factory=list)  # module paths with parameters, graph order
    convs: list[str] = field(default_factory=list)   # the convolutions among ``layers``
    channels: int | None = None     # channels of the level's last feature map (the stage's output)
    stem: bool = False              # before the first level with a residual add/concatenation
    tokens: bool = False            # some layer outputs a token sequence (B, N, C): not a CNN stage

    def describe(self) -> str:
        kind = "stem " if self.stem else ""
        first, last = (self.layers[0], self.layers[-1]) if self.layers else ("-", "-")
        return (f"{kind}stage {self.index} (level {self.level}, {self.size[0]}x{self.size[1]}, "
                f"{self.channels if self.channels is not None else '?'} channels, {len(self.convs)} convs, "
                f"{first} .. {last})")


def feature_nodes(gm: fx.GraphModule) -> set[fx.Node]:
    """Nodes that depend on the network input (not only on parameters and constants)."""
    found: set[fx.Node] = set()
    for node in gm.graph.nodes:
        if node.op == "placeholder" or any(i in found for i in node.all_input_nodes):
            found.add(node)
    return found


def _point_index(node: fx.Node, points: Sequence[DownsamplingPoint]) -> int | None:
    """The index of the downsampling point ``node`` is an operation of, if any."""
    if node.op not in ("call_module", "call_function"):
        return None
    key = str(node.target) if node.op == "call_module" else node.name
    src = shape_of(node.args[0]) if node.args else None
    for point in points:
        for op in point.ops:
            if op.path == key and (src is None or len(src) != 4 or (src[2], src[3]) == point.in_size):
                return point.index
    return None


def _is_mixing(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    return node.op == "call_module" and isinstance(modules.get(str(node.target)), _MIXING)


def _passes_through(node: fx.Node, modules: dict[str, nn.Module], features: set[fx.Node]) -> bool:
    """A single-input layer that keeps the channels (norm, activation, padding, dropout)."""
    return (node.op not in ("output", "placeholder") and not _is_mixing(node, modules)
            and len([i for i in node.all_input_nodes if i in features]) == 1)


def _reaches_point(start: fx.Node, skip: fx.Node, k: int, points: Sequence[DownsamplingPoint],
                   modules: dict[str, nn.Module], features: set[fx.Node]) -> bool:
    """Whether ``start``'s output reaches an operation of point ``k`` other than through ``skip``."""
    frontier = [u for u in start.users if u is not skip]
    seen: set[fx.Node] = set()
    while frontier:
        user = frontier.pop()
        if user in seen:
            continue
        seen.add(user)
        if _point_index(user, points) == k:
            return True
        if _point_index(user, points) is None and _passes_through(user, modules, features):
            frontier.extend(u for u in user.users if u is not skip)
    return False


def _transition_input(node: fx.Node, points: Sequence[DownsamplingPoint], modules: dict[str, nn.Module],
                      features: set[fx.Node]) -> tuple[int, list[fx.Node]] | None:
    """If the conv ``node`` is the first layer of a downsampling block, the point index and the
    layers between it and the strided conv.

    That is the case when its output only reaches strided convolutions of one point (through
    single-input layers) and either one of them is depthwise (they share its channels: MobileNet's
    expansion) or the block input also goes straight to that point (a shortcut: ResNet's 1x1
    reduction before the strided 3x3). A plain conv before a strided conv (All-CNN) stays put.
    """
    targets: set[int] = set()
    depthwise = False
    chain: list[fx.Node] = []
    seen: set[fx.Node] = set()
    frontier = list(node.users)
    while frontier:
        user = frontier.pop()
        if user in seen:
            continue
        seen.add(user)
        k = _point_index(user, points)
        if k is not None:
            module = modules.get(str(user.target)) if user.op == "call_module" else None
            if not isinstance(module, _CONV):
                return None
            targets.add(k)
            depthwise = depthwise or (module.groups > 1 and module.groups == module.in_channels)
            continue
        if user.op != "output" and shape_of(user) is None:  # size/shape queries: not on the data path
            continue
        if not _passes_through(user, modules, features):
            return None
        chain.append(user)
        frontier.extend(user.users)
    if len(targets) != 1:
        return None
    k = targets.pop()
    inputs = [i for i in node.all_input_nodes if i in features]
    if depthwise or any(_reaches_point(i, node, k, points, modules, features) for i in inputs):
        return k, chain
    return None


def node_levels(traced: TracedNet, points: Sequence[DownsamplingPoint] | None = None) -> dict[fx.Node, int]:
    """The resolution level of every node of ``traced`` (see the module docstring)."""
    if points is None:
        points = find_downsampling_points(traced)
    modules = traced.modules()
    features = feature_nodes(traced.gm)
    levels: dict[fx.Node, int] = {}
    for node in traced.gm.graph.nodes:
        level = max((levels[i] for i in node.all_input_nodes), default=0)
        k = _point_index(node, points)
        if k is not None:
            level = max(level, k + 1)
        levels[node] = level
    for node in traced.gm.graph.nodes:
        if node not in features or not _is_mixing(node, modules) or _point_index(node, points) is not None:
            continue
        found = _transition_input(node, points, modules, features)
        if found is not None and found[0] + 1 > levels[node]:
            for moved in (node, *found[1]):
                levels[moved] = found[0] + 1
    return levels


def find_head(traced: TracedNet) -> Head:
    """The global pooling of the feature path, the layers after it and the classifier.

    The head's pooling is the last global pooling whose result never merges back with the
    feature path (a squeeze-excitation gate does merge back).
    """
    modules = traced.modules()
    nodes = list(traced.gm.graph.nodes)
    features = feature_nodes(traced.gm)
    classifier = None
    for node in reversed(nodes):
        if node in features and _is_mixing(node, modules):
            classifier = str(node.target)
            break
    for node in reversed(nodes):
        if node not in features or not _is_global_pool(node, modules):
            continue
        src = shape_of(node.args[0]) if node.args else None
        if src is None or len(src) != 4:
            continue
        after: set[fx.Node] = {node}
        merges_back = False
        for later in nodes[nodes.index(node) + 1:]:
            inputs = [i for i in later.all_input_nodes if i in features]
            if any(i in after for i in inputs):
                if any(i not in after for i in inputs):
                    merges_back = True
                    break
                after.add(later)
        if merges_back:
            continue
        layers = []
        for later in nodes:
            if later in after and later.op == "call_module" and str(later.target) not in layers:
                if any(True for _ in modules[str(later.target)].parameters()):
                    layers.append(str(later.target))
        return Head(node.name, layers, classifier)
    return Head(None, [classifier] if classifier else [], classifier)


def is_residual(node: fx.Node, features: set[fx.Node]) -> bool:
    merge = (node.op == "call_function" and node.target in _RESIDUAL_FUNCTIONS) or (
        node.op == "call_method" and node.target in ("add", "add_"))
    if not merge:
        return False
    maps = [s for s in (shape_of(i) for i in node.all_input_nodes if i in features) if s is not None and len(s) == 4]
    return len(maps) >= 2


def _nodes_after_pool(traced: TracedNet, head: Head) -> set[fx.Node]:
    """The head's pooling node and every node fed by it."""
    after_pool: set[fx.Node] = set()
    if head.pool is not None:
        for node in traced.gm.graph.nodes:
            if node.name == head.pool or any(i in after_pool for i in node.all_input_nodes):
                after_pool.add(node)
    return after_pool


def _add_layer(stage: Stage, path: str, module: nn.Module, shape: tuple[int, ...] | None) -> None:
    """Record ``module`` (at ``path``) in ``stage`` once, if it has parameters."""
    if path in stage.layers or not any(True for _ in module.parameters()):
        return
    stage.layers.append(path)
    if isinstance(module, _CONV):
        stage.convs.append(path)
    if shape is not None and len(shape) == 3:
        stage.tokens = True


def find_stages(traced: TracedNet, points: Sequence[DownsamplingPoint] | None = None,
                head: Head | None = None) -> list[Stage]:
    """The stages of ``traced`` from the input to the output (empty if it has no convolution).

    Layers of the head (see :func:`find_head`) belong to no stage.
    """
    if points is None:
        points = find_downsampling_points(traced)
    if head is None:
        head = find_head(traced)
    modules = traced.modules()
    features = feature_nodes(traced.gm)
    levels = node_levels(traced, points)
    head_paths = set(head.layers)
    after_pool = _nodes_after_pool(traced, head)
    sizes = [tuple(traced.input_shape[2:4])] + [p.out_size for p in points]
    by_level: dict[int, Stage] = {}
    residual_levels: set[int] = set()
    for node in traced.gm.graph.nodes:
        if node not in features or node in after_pool:
            continue
        level = levels[node]
        stage = by_level.get(level)
        if stage is None:
            size = sizes[level] if level < len(sizes) else sizes[-1]
            stage = by_level[level] = Stage(-1, level, (int(size[0]), int(size[1])),
                                            points[level - 1] if level > 0 else None)
        if is_residual(node, features):
            residual_levels.add(level)
        shape = shape_of(node)
        if shape is not None and len(shape) == 4 and node.op != "output":
            stage.channels = int(shape[1])
        if node.op == "call_module" and str(node.target) not in head_paths:
            _add_layer(stage, str(node.target), modules[str(node.target)], shape)
    stages = [s for _, s in sorted(by_level.items()) if s.convs]
    first_residual = min(residual_levels, default=None)
    for i, stage in enumerate(stages):
        stage.index = i
        stage.stem = first_residual is not None and stage.level < first_residual
    return stages


def last_stage(traced: TracedNet) -> Stage | None:
    """The stage at the lowest resolution that holds convolutions, or None."""
    stages = find_stages(traced)
    return stages[-1] if stages else None


def width_stages(traced: TracedNet) -> tuple[list[Stage], str | None]:
    """The stages whose widths can change (the stem excluded), or none and why (no convolutional stages)."""
    found = find_stages(traced, head=find_head(traced))
    stages = [s for s in found if not s.stem]
    if not stages or any(s.tokens for s in found):
        return [], "widths: the model has no convolutional stages"
    return stages, None
