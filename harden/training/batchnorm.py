"""Batch-norm layers of a model and the recalibration of their running statistics on clean images."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from harden.runtime.modes import modes_kept


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Batch-norm layers that keep running statistics."""
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterator[torch.Tensor] | Sequence[torch.Tensor]) -> int:
    """Recompute batch-norm running statistics as the plain average over ``batches`` of clean images.

    Returns the number of images seen (0 when the model has no batch norm). The model's modes are restored.
    """
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch counts equally
    seen = 0
    try:
        with modes_kept(model):
            model.train()
            for xb in batches:
                if xb.shape[0] < 2:
                    continue
                model(xb)
                seen += xb.shape[0]
    finally:
        for m, mom in zip(layers, momenta):
            m.momentum = mom
    return seen
