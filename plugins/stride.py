"""stride-mod and strides: change the stride of downsampling points (Xu et al., rcm).

Both find the downsampling points in the traced graph (see :mod:`harden.graph.downsampling`) and
edit the strided layers in place: convolutions get the new stride (and "same" padding when they
stop downsampling), pooling layers at stride 1 are removed, as rcm does for VGG.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from harden.errors import HardenError, UsageError
from harden.graph import DownsamplingPoint, find_downsampling_points, find_stem, trace_with_shapes
from harden.model import HardenedModel
from harden.transforms import KEEP, Applied, Param, SearchDimension, Shorthand, Transform


def _points(model: HardenedModel) -> tuple[list[DownsamplingPoint], list[DownsamplingPoint]]:
    traced = trace_with_shapes(model.net, model.net_input_size())
    points = find_downsampling_points(traced)
    return points, find_stem(traced, points)


def _set_module(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, attr = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, attr, new)


def _set_conv_stride(conv: nn.Conv2d, stride: int) -> None:
    old = tuple(conv.stride)
    conv.stride = (stride, stride)
    if stride == 1 and max(old) > 1 and isinstance(conv.padding, tuple) and conv.padding_mode == "zeros":
        k, d = conv.kernel_size, conv.dilation
        if all((ki - 1) * di % 2 == 0 for ki, di in zip(k, d)):
            conv.padding = tuple((ki - 1) * di // 2 for ki, di in zip(k, d))
        elif type(conv) is nn.Conv2d:  # even kernels (patchify convs) keep the size with 'same'
            conv.padding = "same"


def set_point_stride(model: HardenedModel, point: DownsamplingPoint, stride: int) -> list[str]:
    """Give every layer of ``point`` the stride ``stride``; returns what changed."""
    changes = []
    for op in point.ops:
        if max(op.stride) == stride:
            continue
        if not op.editable:
            raise HardenError(
                f"downsampling point {point.index} uses a functional call ({op.path}) in forward code; "
                "harden can only change strided layers that are modules")
        layer = model.net.get_submodule(op.path)
        if op.kind == "pool" and stride == 1:
            _set_module(model.net, op.path, nn.Identity())
            changes.append(f"{op.path}: {type(layer).__name__} removed (stride 1)")
        elif op.kind == "pool":
            layer.stride = stride
            changes.append(f"{op.path}: stride {op.stride[0]} -> {stride}")
        else:
            _set_conv_stride(layer, stride)
            changes.append(f"{op.path}: stride {op.stride[0]} -> {stride}")
    return changes


def _listing(points: list[DownsamplingPoint]) -> str:
    return "; ".join(p.describe() for p in points) or "none"


class StrideMod(Transform):
    """Remove one factor of two of downsampling at the first stage transition after the stem."""

    name = "stride-mod"
    summary = "halve the stride of the first downsampling point after the stem (rcm's 1222 -> 1122)"
    shorthands = (Shorthand("--stride-mod", help="Halve the stride of the first stage transition after the stem.",
                            order=10, excludes=("--strides",)),)

    def apply(self, model: HardenedModel) -> Applied:
        points, stem = _points(model)
        rest = [p for p in points if p not in stem and p.stride % 2 == 0]
        if not rest:
            raise HardenError(
                f"{model.spec} has no downsampling point after the stem to change "
                f"(points found: {_listing(points)}); stride changes apply to CNNs with stages")
        target = rest[0]
        changes = [f"points: {_listing(points)}",
                   f"stem: {', '.join(str(p.index) for p in stem) or 'none'}"]
        changes += set_point_stride(model, target, target.stride // 2)
        return Applied(changes)


def _pattern(text: str) -> str:
    text = str(text).strip()
    if not text or not text.isdigit() or "0" in text:
        raise ValueError("write one stride digit (1-9) per downsampling point, e.g. 1122")
    return text


def _halved_patterns(points: list[DownsamplingPoint]) -> list[str]:
    """The current pattern with each point's stride halved, and with the first two such points halved together."""
    current = [p.stride for p in points]
    halvable = [i for i, s in enumerate(current) if s >= 2]
    patterns = []
    for group in [[i] for i in halvable] + ([halvable[:2]] if len(halvable) >= 2 else []):
        new = list(current)
        for i in group:
            new[i] = current[i] // 2
        patterns.append("".join(map(str, new)))
    return patterns


class Strides(Transform):
    """Set the stride of every downsampling point explicitly, one digit per point."""

    name = "strides"
    summary = "set the stride of each downsampling point, e.g. strides:pattern=1122"
    params = (Param("pattern", _pattern, required=True, help="one digit per downsampling point"),)
    shorthands = (Shorthand("--strides", "pattern", "PATTERN", "Stride per downsampling point, e.g. 1122.",
                            order=11, excludes=("--stride-mod",)),)
    search_order = 30

    @classmethod
    def search_dimensions(cls, model: HardenedModel, traced: Any) -> tuple[list[SearchDimension], str | None]:
        points = find_downsampling_points(traced)
        if not points or any(not op.editable for p in points for op in p.ops) or any(p.stride > 9 for p in points):
            return [], "strides: no downsampling points harden can edit"
        current = "".join(str(p.stride) for p in points)
        return [SearchDimension("strides", (KEEP, *_halved_patterns(points)),
                                f"stride per downsampling point (now {current})")], None

    @classmethod
    def search_spec(cls, params: dict[str, str]) -> str | None:
        pattern = params.get("strides", KEEP)
        return None if pattern == KEEP else f"strides:pattern={pattern}"

    def apply(self, model: HardenedModel) -> Applied:
        pattern = self.config["pattern"]
        points, _ = _points(model)
        current = "".join(str(p.stride) for p in points)
        extra = len(pattern) - len(points)
        # rcm writes one digit per stage, the first stage of a CIFAR ResNet having stride 1:
        # leading 1s beyond the points found stand for those non-downsampling stages.
        if extra > 0 and set(pattern[:extra]) == {"1"}:
            pattern = pattern[extra:]
        if len(pattern) != len(points):
            raise UsageError(
                f"strides pattern '{self.config['pattern']}' has {len(self.config['pattern'])} digits but "
                f"{model.spec} has {len(points)} downsampling points (current pattern {current or 'none'}: "
                f"{_listing(points)})")
        changes = [f"points: {_listing(points)}", f"pattern {current} -> {pattern}"]
        for point, digit in zip(points, pattern):
            changes += set_point_stride(model, point, int(digit))
        return Applied(changes)
