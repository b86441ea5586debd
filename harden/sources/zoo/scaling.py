"""RobustScaling (Huang et al., CVPR 2023): how to spend a FLOP budget on depth and width.

The rule: stage depths ``D1 : D2 : D3 = 2 : 2 : 1``, stage widening factors
``W1 : W2 : W3 = 2 : 2.5 : 1`` and ``sum(D) : sum(W) = 7 : 3``. One scale ``t`` gives
``sum(D) = 7t`` and ``sum(W) = 3t``; each value is rounded to the nearest whole number and the scale
whose network's cost is closest to the budget wins. ``t = 5`` gives the paper's A1 exactly
(depths 14-14-7, widths 5-7-3); the paper's larger A2..A4 were rounded by hand and lie one step
away from what the rule gives for their budgets.

Costs are multiply-accumulates of one 32x32 image through the convolutions and linear layers
(what the paper and torch's FLOP counter / 2 report as "FLOPs"), computed in closed form.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from harden.errors import UsageError
from harden.sources.zoo.robustresnet import (
    BLOCK_DEFAULTS,
    CONFIGS,
    STAGE_BASE_CHANNELS,
    STEM_CHANNELS,
    bottleneck_width,
)

DEPTH_RATIO = (2.0, 2.0, 1.0)
WIDTH_RATIO = (2.0, 2.5, 1.0)
DEPTH_TO_WIDTH = 7.0 / 3.0


@dataclass(frozen=True)
class ScaledNet:
    """A RobustScaling configuration and what it costs."""

    depths: tuple[int, int, int]
    widths: tuple[int, int, int]
    block: str
    macs: int
    params: int
    scale: float

    @property
    def channels(self) -> tuple[int, ...]:
        """Stage output channels (``4 * planes`` for RobustResBlocks)."""
        expansion = 4 if self.block == "robust" else 1
        return tuple(b * w * expansion for b, w in zip(STAGE_BASE_CHANNELS, self.widths))


def _round(x: float) -> int:
    return max(1, int(math.floor(x + 0.5)))


def config_for_scale(scale: float) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Depths and widening factors the rule gives for scale ``t`` (``sum(D) = 7t``, ``sum(W) = 3t``)."""
    total_d = DEPTH_TO_WIDTH * 3.0 * scale
    total_w = 3.0 * scale
    depths = tuple(_round(total_d * r / sum(DEPTH_RATIO)) for r in DEPTH_RATIO)
    widths = tuple(_round(total_w * r / sum(WIDTH_RATIO)) for r in WIDTH_RATIO)
    return depths, widths  # type: ignore[return-value]


def _conv_out(size: int, stride: int) -> int:
    # every strided layer here (3x3 pad 1, 1x1 pad 0, 3x3 avg-pool pad 1) gives ceil(size / stride)
    return (size - 1) // stride + 1


def count_cost(depths: Sequence[int], widths: Sequence[int], *, block: str = "robust", input_size: int = 32,
               num_classes: int = 10, strides: Sequence[int] = (1, 2, 2), scales: int = BLOCK_DEFAULTS["scales"],
               base_width: int = BLOCK_DEFAULTS["base_width"], cardinality: int = BLOCK_DEFAULTS["cardinality"],
               se_reduction: int = BLOCK_DEFAULTS["se_reduction"]) -> tuple[int, int]:
    """``(macs, params)`` of the RobustResNet / WRN-A network with these stages, in closed form.

    MACs count convolutions and linear layers (as torch's FLOP counter does, halved); parameters
    count everything, batch norm included.
    """
    if block not in ("robust", "basic"):
        raise UsageError(f"block must be 'robust' or 'basic', got '{block}'")
    size = input_size
    macs = 3 * STEM_CHANNELS * 9 * size * size
    params = 3 * STEM_CHANNELS * 9
    in_c = STEM_CHANNELS
    for base, depth, width, stride in zip(STAGE_BASE_CHANNELS, depths, widths, strides):
        planes = base * int(width)
        for i in range(int(depth)):
            s = int(stride) if i == 0 else 1
            out_size = _conv_out(size, s)
            area = out_size * out_size
            if block == "robust":
                w = bottleneck_width(planes, base_width, cardinality)
                mid, out_c = w * scales, 4 * planes
                hidden = max(1, out_c // se_reduction)
                macs += in_c * mid * size * size + (scales - 1) * w * (w // cardinality) * 9 * area
                macs += mid * out_c * area + 2 * out_c * hidden
                params += 2 * in_c + in_c * mid + 2 * mid + (scales - 1) * (w * (w // cardinality) * 9 + 2 * w)
                params += mid * out_c + 2 * out_c + 2 * out_c * hidden
            else:
                out_c = planes
                macs += (in_c * planes + planes * planes) * 9 * area
                params += 2 * in_c + in_c * planes * 9 + 2 * planes + planes * planes * 9
            if s != 1 or in_c != out_c:
                macs += in_c * out_c * area
                params += in_c * out_c
            in_c, size = out_c, out_size
    macs += in_c * num_classes
    params += 2 * in_c + in_c * num_classes + num_classes
    return macs, params


def robust_scaling(budget_macs: float, *, block: str = "robust", input_size: int = 32,
                   num_classes: int = 10) -> ScaledNet:
    """The RobustScaling configuration whose cost is closest to ``budget_macs`` (multiply-accumulates)."""
    if not budget_macs > 0:
        raise UsageError(f"the FLOP budget must be positive, got {budget_macs}")
    smallest = count_cost(*config_for_scale(0.0), block=block, input_size=input_size, num_classes=num_classes)[0]
    if budget_macs < smallest:
        raise UsageError(f"a budget of {budget_macs:.3g} MACs is below the smallest network of the rule "
                         f"({smallest:.3g} MACs at input {input_size}); raise --flops")
    best: ScaledNet | None = None
    seen: set[tuple[tuple[int, ...], tuple[int, ...]]] = set()
    scale = 0.0
    while True:
        depths, widths = config_for_scale(scale)
        if (depths, widths) not in seen:
            seen.add((depths, widths))
            macs, params = count_cost(depths, widths, block=block, input_size=input_size, num_classes=num_classes)
            cand = ScaledNet(depths, widths, block, macs, params, round(scale, 3))
            if best is None or abs(math.log(macs / budget_macs)) < abs(math.log(best.macs / budget_macs)):
                best = cand
            if macs > 2 * budget_macs:
                break
        scale += 0.005
    assert best is not None
    return best


def nearest_published(depths: Sequence[int], widths: Sequence[int]) -> str:
    """Name of the paper's A1..A4 configuration closest to ``depths``/``widths``."""
    def dist(name: str) -> int:
        d, w = CONFIGS[name]
        return sum(abs(a - b) for a, b in zip(d, depths)) + sum(abs(a - b) for a, b in zip(w, widths))

    return min(CONFIGS, key=dist)


_UNITS = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def parse_flops(text: str) -> float:
    """``"10G"``, ``"500M"``, ``"5e9"`` -> a number (multiply-accumulates, the paper's "FLOPs")."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMgGtT]?)(?:FLOPS|FLOPs|flops|MACs|macs)?\s*",
                     str(text))
    if not m:
        raise UsageError(f"cannot read the FLOP budget '{text}'; write e.g. 10G, 500M or 5e9")
    return float(m.group(1)) * _UNITS[m.group(2).upper()]
