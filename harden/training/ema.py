"""An exponential moving average of a model's weights (``--ema``)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class EMA:
    """Exponential moving average of a model's parameters and floating buffers (a full copy of the model).

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` so short runs are not dominated by the start.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model)
        self.module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self._pairs()

    def _pairs(self) -> None:
        self._float_dst: list[torch.Tensor] = []
        self._other_dst: list[torch.Tensor] = []
        for t in self.module.state_dict().values():
            (self._float_dst if t.is_floating_point() else self._other_dst).append(t)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        src_f, src_o = [], []
        for t in model.state_dict().values():
            (src_f if t.is_floating_point() else src_o).append(t)
        torch._foreach_lerp_(self._float_dst, src_f, 1.0 - d)
        for dst, src in zip(self._other_dst, src_o):
            dst.copy_(src)

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "state": self.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["state"])
