"""The classic CIFAR networks of the robustness literature: 3x3 stride-1 stem, no max-pool.

* ResNet-18/34 as in rcm (Xu et al.) and most adversarial-training papers; module names follow
  torchvision (``conv1``, ``bn1``, ``layer1``..``layer4``, ``downsample``, ``fc``).
* PreAct ResNet-18 as in Rice et al. and RobustBench (``layer*``, ``shortcut``, ``bn``, ``linear``).
* Wide ResNets WRN-DEPTH-WIDEN as in TRADES and RobustBench (``block1``..``block3``, ``convShortcut``,
  ``bn1``, ``fc``), so their published state dicts load with ``--weights``.
* rcm's CIFAR VGG-16-BN and AlexNet.

Every activation is an ``nn.ReLU`` module and every forward is free of data-dependent control
flow, so harden's transforms (torch.fx) apply to them like to any timm or torchvision model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from harden.model import CIFAR10_MEAN, CIFAR10_STD  # noqa: F401  (re-exported: the zoo's defaults)


def _init_conv_bn(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# -------------------------------------------------------------------------------------------- ResNet


class BasicBlock(nn.Module):
    """Post-activation residual block: conv-bn-relu-conv-bn, add the shortcut, relu."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


def _add_stages(net: nn.Module, block: type[nn.Module], layers: Sequence[int]) -> None:
    """Add ``layer1`` .. ``layer4`` of 64-128-256-512 channels, strides 1-2-2-2, to a CIFAR ResNet."""
    in_planes = 64
    for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
        stage = []
        for j in range(blocks):
            stage.append(block(in_planes, planes, (1 if i == 0 else 2) if j == 0 else 1))
            in_planes = planes
        net.add_module(f"layer{i + 1}", nn.Sequential(*stage))


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs: 3x3 stem, four stages of 64-128-256-512 channels, strides 1-2-2-2."""

    def __init__(self, layers: Sequence[int], num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        _add_stages(self, BasicBlock, layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        _init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 10) -> CifarResNet:
    """CIFAR ResNet-18 (11.2M parameters at 10 classes)."""
    return CifarResNet((2, 2, 2, 2), num_classes)


def resnet34(num_classes: int = 10) -> CifarResNet:
    """CIFAR ResNet-34 (21.3M parameters at 10 classes)."""
    return CifarResNet((3, 4, 6, 3), num_classes)


# ----------------------------------------------------------------------------------- PreAct ResNet


class PreActBlock(nn.Module):
    """Pre-activation block (He et al., 2016): bn-relu-conv-bn-relu-conv plus the shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.relu2(self.bn2(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    """Pre-activation ResNet for 32x32 inputs (Rice et al.'s and RobustBench's PreActResNet-18)."""

    def __init__(self, layers: Sequence[int] = (2, 2, 2, 2), num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        _add_stages(self, PreActBlock, layers)
        self.bn = nn.BatchNorm2d(512)
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(512, num_classes)
        _init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = self.relu(self.bn(out))
        return self.linear(torch.flatten(self.avgpool(out), 1))


def preactresnet18(num_classes: int = 10) -> PreActResNet:
    """PreAct ResNet-18 (11.2M parameters at 10 classes)."""
    return PreActResNet((2, 2, 2, 2), num_classes)


# --------------------------------------------------------------------------------------- Wide ResNet


class WideBasic(nn.Module):
    """The pre-activation block of Zagoruyko & Komodakis' WRN, as written in TRADES and RobustBench."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.dropout = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.equal_in_out = in_planes == out_planes and stride == 1
        self.convShortcut: nn.Module | None = None  # noqa: N815 - RobustBench's state-dict key
        if not self.equal_in_out:
            self.convShortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(act)))
        out = self.conv2(self.dropout(out))
        # the widening/downsampling shortcut sees the pre-activated input, the identity the raw one
        return (x if self.convShortcut is None else self.convShortcut(act)) + out


class NetworkBlock(nn.Module):
    """One WRN stage (its blocks live in ``layer`` so that RobustBench's keys match)."""

    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.layer = nn.Sequential(*[
            WideBasic(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate)
            for i in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-DEPTH-WIDEN for 32x32 inputs: (depth - 4) / 6 blocks per stage, 16k-32k-64k channels.

    ``base_width`` (16 in the paper) scales every stage: 8 gives 8k-16k-32k channels, a quarter of the MACs.
    """

    def __init__(self, depth: int = 28, widen_factor: int = 10, num_classes: int = 10,
                 drop_rate: float = 0.0, base_width: int = 16) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 34, ...), got {depth}")
        if widen_factor < 1:
            raise ValueError(f"WRN widen factor must be >= 1, got {widen_factor}")
        if base_width < 1:
            raise ValueError(f"WRN base width must be >= 1, got {base_width}")
        n = (depth - 4) // 6
        b = base_width
        channels = [b, b * widen_factor, 2 * b * widen_factor, 4 * b * widen_factor]
        self.conv1 = nn.Conv2d(3, channels[0], 3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, channels[0], channels[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, channels[1], channels[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, channels[2], channels[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(channels[3])
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        return self.fc(torch.flatten(self.avgpool(out), 1))


# ---------------------------------------------------------------------------------- VGG and AlexNet

VGG_CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}


class CifarVGG(nn.Module):
    """rcm's CIFAR VGG: 3x3 conv(-bn)-relu stacks, five 2x2 max-pools, a 512-256-256 classifier."""

    def __init__(self, config: Sequence[int | str], batch_norm: bool = True, num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for v in config:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            layers.append(nn.Conv2d(in_ch, int(v), 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(int(v)))
            layers.append(nn.ReLU(inplace=True))
            in_ch = int(v)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(in_ch, 256), nn.ReLU(inplace=True), nn.Dropout(),
            nn.Linear(256, 256), nn.ReLU(inplace=True), nn.Dropout(),
            nn.Linear(256, num_classes),
        )
        _init_conv_bn(self)
        for m in self.classifier:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


class CifarAlexNet(nn.Module):
    """rcm's CIFAR AlexNet: 5x5 stride-2 stem, three 2x2 max-pools, a 256-512-512 classifier."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=5, stride=2, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Dropout(), nn.Linear(256, 512), nn.ReLU(inplace=True),
            nn.Dropout(), nn.Linear(512, 512), nn.ReLU(inplace=True),
            nn.Linear(512, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))
