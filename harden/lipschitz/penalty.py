"""The spectral penalty for training: ``sum(log sigma)`` over a model's convolutions and linear layers."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from harden.errors import UsageError
from harden.graph.tracing import eval_mode
from harden.lipschitz.spectral import ConvOperator, unit
from harden.model import HardenedModel
from harden.seeding import derive_seed


class SpectralPenalty:
    """``sum(log sigma)`` over the convolutions and linear layers of a model, differentiable in the weights.

    Each layer keeps a persistent power-iteration vector (``vectors``, by module path), so one
    iteration per call tracks the weights as they change during training; a convolution's norm is
    taken as an operator on the input size it sees in the model.
    """

    def __init__(self, model: nn.Module, input_size: Sequence[int] | None = None, *,
                 n_power_iterations: int = 1, seed: int | None = None) -> None:
        self.model = weakref.ref(model)
        self.n_power_iterations = max(1, int(n_power_iterations))
        self.seed = seed
        self.vectors: dict[str, torch.Tensor] = {}
        self.layers = self._find_layers(model, input_size)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The power-iteration vectors (on the CPU), for a checkpoint."""
        return {name: v.detach().cpu().clone() for name, v in self.vectors.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Continue from the vectors of :meth:`state_dict` (a resumed run then repeats the same penalties)."""
        self.vectors = {name: v.clone() for name, v in state.items()}

    def _start_vector(self, name: str, shape: Sequence[int], device: torch.device) -> torch.Tensor:
        gen = None
        if self.seed is not None:  # a seeded start per layer: the same run gives the same penalties
            gen = torch.Generator().manual_seed(derive_seed(self.seed, "spectral-penalty", name))
        return unit(torch.randn(tuple(shape), generator=gen, dtype=torch.float32).to(device))

    @staticmethod
    def _find_layers(model: nn.Module, input_size: Sequence[int] | None) -> list[tuple[str, nn.Module, Any]]:
        if input_size is None and isinstance(model, HardenedModel):
            input_size = model.input_size
        convs = {name: m for name, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))}
        shapes: dict[str, tuple[int, ...]] = {}
        if convs:
            if input_size is None:
                raise UsageError("spectral_penalty() on a plain nn.Module with convolutions needs input_size=(C, H, W)")
            def record(name: str) -> Callable[..., None]:
                def hook(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
                    shapes.setdefault(name, tuple(args[0].shape[1:]))
                return hook

            hooks = [m.register_forward_hook(record(name)) for name, m in convs.items()]
            dev = next((p.device for p in model.parameters()), torch.device("cpu"))
            try:
                with eval_mode(model), torch.no_grad():
                    model(torch.zeros(1, *input_size, device=dev))
            finally:
                for h in hooks:
                    h.remove()
        layers: list[tuple[str, nn.Module, Any]] = []
        for name, m in model.named_modules():
            if isinstance(m, nn.Linear):
                layers.append((name, m, None))
            elif name in convs and name in shapes:
                layers.append((name, m, ConvOperator(m, shapes[name])))
        return layers

    def __call__(self) -> torch.Tensor:
        total: torch.Tensor | None = None
        for name, layer, op in self.layers:
            w = layer.weight
            if op is None:
                fwd: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = lambda v, w: v @ w.t()  # noqa: E731
                adj: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = lambda u, w: u @ w  # noqa: E731
                shape: tuple[int, ...] = (1, w.shape[1])
            else:
                fwd, adj, shape = op.forward, op.adjoint, op.in_shape
            v = self.vectors.get(name)
            if v is None or tuple(v.shape) != tuple(shape):
                v = self._start_vector(name, shape, w.device)
            elif v.device != w.device:
                v = v.to(w.device)
            with torch.no_grad():
                wd = w.detach().float()
                for _ in range(self.n_power_iterations):
                    u = unit(fwd(v, wd))
                    v = unit(adj(u, wd))
            self.vectors[name] = v
            sigma = (u * fwd(v, w.float())).sum()
            term = torch.log(sigma.clamp_min(1e-12))
            total = term if total is None else total + term
        if total is None:
            dev = next((p.device for p in self.model().parameters()), torch.device("cpu")) if self.model() else None
            return torch.zeros((), device=dev)
        return total


_PENALTIES: weakref.WeakKeyDictionary[nn.Module, SpectralPenalty] = weakref.WeakKeyDictionary()


def spectral_penalty(model: nn.Module, input_size: Sequence[int] | None = None) -> torch.Tensor:
    """Sum of the log spectral norms of ``model``'s convolutions and linear layers (differentiable).

    Meant as a regularizer (``loss + lam * spectral_penalty(model)``); the power-iteration vectors
    persist between calls (one iteration per call), so it costs two small convolutions per layer.
    """
    penalty = _PENALTIES.get(model)
    if penalty is None:
        penalty = _PENALTIES[model] = SpectralPenalty(model, input_size)
    return penalty()
