"""Small helpers shared by the transform tests."""

from __future__ import annotations

import torch
from torch import nn


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's logits in eval mode, without gradients."""
    model.eval()
    with torch.no_grad():
        return model(x)


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Every state-dict entry's shape, by key."""
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}
