"""Networks in the state-dict layouts of RobustBench checkpoints that harden's CIFAR zoo lacks.

* :class:`ShortcutResNet`: the post-activation CIFAR ResNet whose blocks name their projection
  ``shortcut`` and whose classifier is ``linear`` (ResNet-18 with basic blocks, ResNet-50 with
  bottlenecks), as most adversarial-training code writes it.
* :class:`PreActResNetRB`: the pre-activation ResNet-18 with both shortcut conventions (the projection
  reading the raw block input, or the activated one) and an optional bn-relu before the classifier.
* :class:`DMWideResNet` and :class:`DMPreActResNet`: DeepMind's networks (Gowal et al., Rebuffi et al.)
  with TensorFlow-style "SAME" padding (:class:`SamePadConv2d`) and SiLU (swish) activations.
* :class:`RobustWideResNet`: WRN with per-stage channels and depths (Huang et al. 2021, WRN-34-R).

Input normalization is not part of these networks: harden keeps it in the :class:`HardenedModel`.
Every forward is free of data-dependent control flow and every activation is a module, so harden's
transforms (torch.fx) apply.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_module
from torch import nn

from harden.sources.zoo.cifar import NetworkBlock

_ACTS = {"relu": nn.ReLU, "silu": nn.SiLU}


def _act(name: str) -> nn.Module:
    if name not in _ACTS:
        raise ValueError(f"activation must be one of {', '.join(_ACTS)}, got '{name}'")
    return _ACTS[name]()


def _flat_pool(x: torch.Tensor) -> torch.Tensor:
    return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


# ------------------------------------------------------------------------ ResNet, shortcut/linear


class ShortcutBasicBlock(nn.Module):
    """conv-bn-relu-conv-bn plus the shortcut (identity or ``shortcut`` = 1x1 conv-bn), relu."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.shortcut = _projection(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class ShortcutBottleneck(nn.Module):
    """1x1-3x3-1x1 bottleneck (4x expansion, stride on the 3x3) with a ``shortcut`` projection."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu3 = nn.ReLU()
        self.shortcut = _projection(in_planes, planes * 4, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))
        return self.relu3(self.bn3(self.conv3(out)) + self.shortcut(x))


def _projection(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    if stride == 1 and in_planes == out_planes:
        return nn.Sequential()  # identity, no parameters (the layout's empty ``shortcut``)
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes))


class ShortcutResNet(nn.Module):
    """CIFAR ResNet (3x3 stem, stages of 64-128-256-512 planes, strides 1-2-2-2) in the shortcut/linear layout."""

    def __init__(self, layers: Sequence[int] = (2, 2, 2, 2), num_classes: int = 10, bottleneck: bool = False,
                 widths: Sequence[int] = (64, 128, 256, 512)) -> None:
        super().__init__()
        block = ShortcutBottleneck if bottleneck else ShortcutBasicBlock
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        in_planes = widths[0]
        for i, (planes, n) in enumerate(zip(widths, layers)):
            blocks = []
            for j in range(n):
                blocks.append(block(in_planes, planes, (1 if i == 0 else 2) if j == 0 else 1))
                in_planes = planes * block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(_flat_pool(out))


# ---------------------------------------------------------------------------------- PreAct ResNet


class PreActBlockRB(nn.Module):
    """bn-relu-conv-bn-relu-conv plus a shortcut that reads the raw input or the activated one."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, activated_shortcut: bool = False) -> None:
        super().__init__()
        self.activated_shortcut = activated_shortcut
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu1(self.bn1(x))
        if self.shortcut is None:
            skip = x
        else:
            skip = self.shortcut(act if self.activated_shortcut else x)
        return self.conv2(self.relu2(self.bn2(self.conv1(act)))) + skip


class PreActResNetRB(nn.Module):
    """Pre-activation CIFAR ResNet: ``conv1``, ``layer1..4``, optional ``bn`` (bn-relu), ``linear``."""

    def __init__(self, layers: Sequence[int] = (2, 2, 2, 2), num_classes: int = 10, activated_shortcut: bool = False,
                 bn_before_fc: bool = False, widths: Sequence[int] = (64, 128, 256, 512)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        in_planes = widths[0]
        for i, (planes, n) in enumerate(zip(widths, layers)):
            blocks = []
            for j in range(n):
                blocks.append(PreActBlockRB(in_planes, planes, (1 if i == 0 else 2) if j == 0 else 1,
                                            activated_shortcut))
                in_planes = planes
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.bn: nn.Module | None = nn.BatchNorm2d(in_planes) if bn_before_fc else None
        self.relu = nn.ReLU()
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        if self.bn is not None:
            out = self.relu(self.bn(out))
        return self.linear(_flat_pool(out))


# ------------------------------------------------------------------------------------- DeepMind


class SamePadConv2d(nn.Conv2d):
    """A 3x3 conv with TensorFlow's "SAME" padding: symmetric at stride 1, one row and column at the bottom
    and right when strided (built then with ``padding=0``).

    timm's tracer list keeps it a leaf, so harden's graph analysis sees one strided conv reading the block's
    input, grouped with the block's shortcut; a transform that sets its stride to 1 also sets padding 1,
    and the extra padding stops.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if max(self.stride) > 1 and self.padding == (0, 0) and self.kernel_size == (3, 3):
            x = F.pad(x, (0, 1, 0, 1))
        return super().forward(x)


register_notrace_module(SamePadConv2d)


def _same_conv(in_planes: int, out_planes: int, stride: int) -> SamePadConv2d:
    return SamePadConv2d(in_planes, out_planes, 3, stride=stride, padding=1 if stride == 1 else 0, bias=False)


class DMBlock(nn.Module):
    """DeepMind's WRN block: bn-act-conv-bn-act-conv; the projection reads the activated input."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, activation: str = "silu") -> None:
        super().__init__()
        self.batchnorm_0 = nn.BatchNorm2d(in_planes)
        self.relu_0 = _act(activation)
        self.conv_0 = _same_conv(in_planes, out_planes, stride)
        self.batchnorm_1 = nn.BatchNorm2d(out_planes)
        self.relu_1 = _act(activation)
        self.conv_1 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if in_planes != out_planes:
            self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu_0(self.batchnorm_0(x))
        out = self.conv_1(self.relu_1(self.batchnorm_1(self.conv_0(act))))
        return (x if self.shortcut is None else self.shortcut(act)) + out


class DMBlockGroup(nn.Module):
    """One stage of :class:`DMWideResNet` (its blocks live in ``block``)."""

    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.block = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class DMWideResNet(nn.Module):
    """DeepMind's WRN-DEPTH-WIDTH (``init_conv``, ``layer.{0,1,2}.block``, ``batchnorm``, ``logits``)."""

    def __init__(self, depth: int = 28, width: int = 10, num_classes: int = 10, activation: str = "silu") -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n+4 (10, 16, 22, 28, 34, ...), got {depth}")
        n = (depth - 4) // 6
        channels = [16, 16 * width, 32 * width, 64 * width]
        self.init_conv = nn.Conv2d(3, channels[0], 3, stride=1, padding=1, bias=False)
        groups = []
        for i, stride in enumerate((1, 2, 2)):
            groups.append(DMBlockGroup([
                DMBlock(channels[i] if j == 0 else channels[i + 1], channels[i + 1], stride if j == 0 else 1,
                        activation) for j in range(n)]))
        self.layer = nn.Sequential(*groups)
        self.batchnorm = nn.BatchNorm2d(channels[3])
        self.relu = _act(activation)
        self.logits = nn.Linear(channels[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.batchnorm(self.layer(self.init_conv(x))))
        return self.logits(_flat_pool(out))


class DMPreActBlock(nn.Module):
    """DeepMind's pre-activation block; its projection is a 3x3 conv on the raw (padded) input."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, activation: str = "silu") -> None:
        super().__init__()
        self.batchnorm_0 = nn.BatchNorm2d(in_planes)
        self.relu_0 = _act(activation)
        self.conv_2d_1 = _same_conv(in_planes, out_planes, stride)
        self.batchnorm_1 = nn.BatchNorm2d(out_planes)
        self.relu_1 = _act(activation)
        self.conv_2d_2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != out_planes:
            self.shortcut = _same_conv(in_planes, out_planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu_0(self.batchnorm_0(x))
        skip = x if self.shortcut is None else self.shortcut(x)
        out = self.conv_2d_1(act)
        return self.conv_2d_2(self.relu_1(self.batchnorm_1(out))) + skip


class DMPreActResNet(nn.Module):
    """DeepMind's PreAct ResNet-18/34 (``conv_2d``, ``layer_0..3``, ``batchnorm``, ``logits``)."""

    def __init__(self, depth: int = 18, num_classes: int = 10, activation: str = "silu",
                 widths: Sequence[int] = (64, 128, 256, 512)) -> None:
        super().__init__()
        layers = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}.get(depth)
        if layers is None:
            raise ValueError(f"DeepMind's PreAct ResNet has depth 18 or 34, got {depth}")
        self.conv_2d = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        in_planes = widths[0]
        for i, (planes, n) in enumerate(zip(widths, layers)):
            blocks = []
            for j in range(n):
                blocks.append(DMPreActBlock(in_planes, planes, (1 if i == 0 else 2) if j == 0 else 1, activation))
                in_planes = planes
            self.add_module(f"layer_{i}", nn.Sequential(*blocks))
        self.batchnorm = nn.BatchNorm2d(in_planes)
        self.relu = _act(activation)
        self.logits = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer_3(self.layer_2(self.layer_1(self.layer_0(self.conv_2d(x)))))
        return self.logits(_flat_pool(self.relu(self.batchnorm(out))))


# ------------------------------------------------------------------------------- RobustWideResNet


class RobustWideResNet(nn.Module):
    """WRN with per-stage channels and depths (``stem_conv``, ``blocks``, ``bn1``, ``fc``), e.g. WRN-34-R."""

    def __init__(self, channels: Sequence[int] = (16, 320, 640, 512), depths: Sequence[int] = (5, 5, 5),
                 num_classes: int = 10, strides: Sequence[int] = (1, 2, 2)) -> None:
        super().__init__()
        if len(channels) != len(depths) + 1 or len(strides) != len(depths):
            raise ValueError("RobustWideResNet needs one more channel count than depths, and one stride per stage")
        self.stem_conv = nn.Conv2d(3, channels[0], 3, stride=1, padding=1, bias=False)
        self.blocks = nn.ModuleList([NetworkBlock(int(d), channels[i], channels[i + 1], int(s))
                                     for i, (d, s) in enumerate(zip(depths, strides))])
        self.bn1 = nn.BatchNorm2d(channels[-1])
        self.relu = nn.ReLU()
        self.fc = nn.Linear(channels[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stem_conv(x)
        for stage in self.blocks:
            out = stage(out)
        return self.fc(_flat_pool(self.relu(self.bn1(out))))
