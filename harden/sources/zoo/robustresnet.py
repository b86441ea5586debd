"""RobustResNets (Huang et al., "Revisiting Residual Networks for Adversarial Robustness", CVPR 2023).

A pre-activation residual network for 32x32 inputs: a 3x3 stem with 16 channels, three stages with
depths ``D1, D2, D3`` and widening factors ``W1, W2, W3`` (stage ``i`` has ``planes = [16, 32, 64][i] * Wi``),
a final bn-relu, global average pooling and a linear classifier.

``block="robust"`` stacks :class:`RobustResBlock` (stage output ``4 * planes`` channels): bn-relu,
1x1 conv to ``width * scales`` channels, a Res2Net-style hierarchy of grouped 3x3 convs over
``scales`` channel chunks, a 1x1 conv to ``4 * planes`` and a squeeze-excitation branch added in
parallel to the residual. ``block="basic"`` stacks WRN's pre-activation basic block (the paper's
WRN-A1..A4). Module names follow the authors' code, so their state dicts load with ``--weights``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

#: (depths, widening factors) of the paper's RobustResNet-A1..A4 (and WRN-A1..A4 with basic blocks).
CONFIGS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "a1": ((14, 14, 7), (5, 7, 3)),
    "a2": ((17, 17, 8), (7, 9, 4)),
    "a3": ((22, 22, 11), (8, 11, 5)),
    "a4": ((27, 28, 13), (10, 14, 6)),
}

#: The paper's RobustResBlock settings.
BLOCK_DEFAULTS = {"scales": 8, "base_width": 10, "cardinality": 4, "se_reduction": 64}

STAGE_BASE_CHANNELS = (16, 32, 64)
STEM_CHANNELS = 16

_ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU}


def _activation(name: str) -> nn.Module:
    try:
        cls = _ACTIVATIONS[name.lower()]
    except KeyError:
        raise ValueError(f"activation must be one of {', '.join(_ACTIVATIONS)}, got '{name}'") from None
    return cls(inplace=True)


def bottleneck_width(planes: int, base_width: int, cardinality: int) -> int:
    """Channels of one chunk: ``floor(planes * base_width / 160) * cardinality``."""
    return (planes * base_width // 160) * cardinality


class SqueezeExcitation(nn.Module):
    """Channel gate: global average pool, linear-relu-linear-sigmoid (no biases), rescale."""

    def __init__(self, channels: int, reduction: int = 64) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden, bias=False), nn.ReLU(inplace=True),
            nn.Linear(hidden, channels, bias=False), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc(torch.flatten(self.avg_pool(x), 1))
        return x * gate[:, :, None, None]


class PreActBasicBlock(nn.Module):
    """WRN's pre-activation basic block (bn-act-conv3x3-bn-act-conv3x3 plus shortcut)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, *, activation: str = "relu",
                 **_: object) -> None:
        super().__init__()
        self.act = _activation(activation)
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv2(self.act(self.bn2(self.conv1(out))))
        return out + shortcut


class RobustResBlock(nn.Module):
    """Huang et al.'s RobustResBlock (output ``4 * planes`` channels).

    As in the authors' code, the pre-activated input feeds the projection shortcut while the first
    1x1 convolution reads the block input itself; with ``stride > 1`` the chunks are not chained and
    the last chunk is average-pooled, as in Res2Net's first block of a stage.
    """

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, *, scales: int = 8, base_width: int = 10,
                 cardinality: int = 4, se_reduction: int = 64, kernel_size: int = 3,
                 activation: str = "relu") -> None:
        super().__init__()
        if scales < 2:
            raise ValueError(f"RobustResBlock needs scales >= 2, got {scales}")
        width = bottleneck_width(planes, base_width, cardinality)
        if width < cardinality:
            raise ValueError(f"planes={planes} is too narrow for base_width={base_width} and "
                             f"cardinality={cardinality} (chunk width {width})")
        out_planes = planes * self.expansion
        self.scales = scales
        self.act = _activation(activation)
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, width * scales, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width * scales)
        self.conv2 = nn.ModuleList([
            nn.Conv2d(width, width, kernel_size, stride=stride, padding=kernel_size // 2, groups=cardinality,
                      bias=False)
            for _ in range(scales - 1)])
        self.bn3 = nn.ModuleList([nn.BatchNorm2d(width) for _ in range(scales - 1)])
        self.pool: nn.Module | None = None
        if stride > 1:
            self.pool = nn.AvgPool2d(kernel_size=3, stride=stride, padding=1)
        self.conv3 = nn.Conv2d(width * scales, out_planes, 1, bias=False)
        self.se_bn = nn.BatchNorm2d(out_planes)
        self.se = SqueezeExcitation(out_planes, se_reduction)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(self.act(self.bn1(x)))
        out = self.act(self.bn2(self.conv1(x)))
        chunks = torch.chunk(out, self.scales, 1)
        # read at trace time from the module, so that a stride transform keeps the block consistent
        chained = max(self.conv2[0].stride) == 1
        ys: list[torch.Tensor] = []
        for s, (conv, bn) in enumerate(zip(self.conv2, self.bn3)):
            inp = chunks[s] + ys[-1] if s > 0 and chained else chunks[s]
            ys.append(self.act(bn(conv(inp))))
        last = chunks[self.scales - 1]
        ys.append(last if self.pool is None else self.pool(last))
        out = self.conv3(torch.cat(ys, 1))
        return out + shortcut + self.se(self.se_bn(out))


class NetworkBlock(nn.Module):
    """One stage; its blocks live in ``layer`` (the authors' state-dict keys)."""

    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.layer = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class RobustResNet(nn.Module):
    """Pre-activation ResNet scaled by stage depths and widening factors (RobustResNets, WRN-A)."""

    def __init__(self, depths: Sequence[int], widths: Sequence[int], num_classes: int = 10, *,
                 block: str = "robust", strides: Sequence[int] = (1, 2, 2), activation: str = "relu",
                 scales: int = 8, base_width: int = 10, cardinality: int = 4, se_reduction: int = 64) -> None:
        super().__init__()
        if len(depths) != 3 or len(widths) != 3 or len(strides) != 3:
            raise ValueError("depths, widths and strides need one value per stage (three stages)")
        if min(depths) < 1 or min(widths) < 1:
            raise ValueError(f"depths and widths must be positive, got {list(depths)} and {list(widths)}")
        if block not in ("robust", "basic"):
            raise ValueError(f"block must be 'robust' or 'basic', got '{block}'")
        cls = RobustResBlock if block == "robust" else PreActBasicBlock
        extra = ({"scales": scales, "base_width": base_width, "cardinality": cardinality,
                  "se_reduction": se_reduction} if block == "robust" else {})
        self.stem_conv = nn.Conv2d(3, STEM_CHANNELS, 3, stride=1, padding=1, bias=False)
        in_planes = STEM_CHANNELS
        stages = []
        for base, depth, width, stride in zip(STAGE_BASE_CHANNELS, depths, widths, strides):
            planes = base * int(width)
            blocks = []
            for i in range(int(depth)):
                blocks.append(cls(in_planes, planes, int(stride) if i == 0 else 1, activation=activation, **extra))
                in_planes = planes * cls.expansion
            stages.append(NetworkBlock(blocks))
        self.blocks = nn.ModuleList(stages)
        self.norm1 = nn.BatchNorm2d(in_planes)
        self.act1 = _activation(activation)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stem_conv(x)
        for stage in self.blocks:
            out = stage(out)
        out = self.act1(self.norm1(out))
        return self.fc(torch.flatten(self.global_pooling(out), 1))
