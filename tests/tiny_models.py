"""Small models for fast CPU tests (importable as ``tiny_models:tiny_cnn`` with tests/ on the path)."""

from __future__ import annotations

from torch import nn


def tiny_cnn(num_classes: int = 10, width: int = 16) -> nn.Module:
    """Three conv-BN-ReLU layers (32x32 -> 8x8), global average pooling and a linear head."""
    w = width
    return nn.Sequential(
        nn.Conv2d(3, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
        nn.Conv2d(w, 2 * w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(),
        nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(4 * w), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, num_classes),
    )
