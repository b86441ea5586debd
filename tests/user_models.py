"""Small user models for tests (importable as ``tests.user_models:NAME``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TinyResNet(nn.Module):
    """A two-stage residual CNN with a strided transition and a 1x1 shortcut, plus dropout."""

    def __init__(self, num_classes: int = 10, width: int = 8, dropout: float = 0.0) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(width)
        self.conv1 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(2 * width)
        self.conv2 = nn.Conv2d(2 * width, 2 * width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.shortcut = nn.Conv2d(width, 2 * width, 1, stride=2, bias=False)
        self.act = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn0(self.stem(x)))
        y = self.act(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        x = F.relu(y + self.shortcut(x))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(self.drop(x))


def tiny_resnet(num_classes: int = 10, dropout: float = 0.0) -> TinyResNet:
    return TinyResNet(num_classes=num_classes, dropout=dropout)


def not_a_model() -> str:
    return "nope"
