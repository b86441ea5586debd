"""Adversarial weight perturbation (AWP; Wu, Xia and Wang, NeurIPS 2020).

Before each update the weights are moved, layer by layer, in the direction that increases the
method's adversarial loss: ``v_l = gamma * ||w_l|| * g_l / ||g_l||`` for every weight with more than
one dimension (convolution and linear weights; biases and batch-norm affine parameters are left
alone, as in the paper). The update's gradient is taken at ``w + v``; the perturbation is then removed
by restoring a saved copy of the weights (exact, bit for bit) and the optimizer steps from ``w``.
The perturbation pass runs in train mode, as the paper's code does, but every buffer (batch-norm
running statistics, ``num_batches_tracked``) is restored afterwards, so it leaves no trace.

Defaults follow the authors' code (github.com/csdongxian/AWP): gamma 1e-2 with no warm-up for PGD-AT,
gamma 5e-3 with AWP starting after 10 epochs for TRADES; MART, another KL-regularised loss, takes
TRADES's values.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from harden.runtime.modes import modes_kept

# the authors' gamma and warm-up epochs by method live with each method (harden.methods: awp_gamma, awp_warmup)

_EPS = 1e-20


@contextlib.contextmanager
def buffers_preserved(model: nn.Module) -> Iterator[None]:
    """Restore every buffer of ``model`` (batch-norm statistics and counters) on exit."""
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, copy in saved:
                b.copy_(copy)


class WeightPerturbation:
    """AWP for one model: :meth:`compute` the perturbation from a loss, :meth:`applied` it around an update.

    ``all_sum`` (and ``world``) average the perturbation's gradient over the processes of a DDP job, so
    that every process perturbs its weights alike.
    """

    def __init__(self, model: nn.Module, gamma: float, *, all_sum: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 world: int = 1) -> None:
        self.model = model
        self.gamma = float(gamma)
        self.weights = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
        self.all_sum = all_sum
        self.world = world

    def _mean_over_processes(self, grads: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if self.all_sum is None or self.world <= 1:
            return list(grads)
        flat = self.all_sum(torch.cat([g.reshape(-1) for g in grads])) / self.world
        return [chunk.view_as(g) for chunk, g in zip(flat.split([g.numel() for g in grads]), grads)]

    def compute(self, loss_fn: Callable[[], torch.Tensor]) -> list[torch.Tensor]:
        """The perturbation (one tensor per weight) that raises ``loss_fn()``, evaluated in train mode."""
        with modes_kept(self.model), buffers_preserved(self.model):
            self.model.train()
            loss = loss_fn()
            grads = torch.autograd.grad(loss, self.weights, allow_unused=True)
        grads = self._mean_over_processes([torch.zeros_like(w) if g is None else g.detach()
                                           for w, g in zip(self.weights, grads)])
        with torch.no_grad():
            return [self.gamma * (w.norm() / (g.norm() + _EPS)) * g for w, g in zip(self.weights, grads)]

    @contextlib.contextmanager
    def applied(self, deltas: Sequence[torch.Tensor]) -> Iterator[None]:
        """Weights at ``w + delta`` inside the block; exactly ``w`` again afterwards (restored from a copy)."""
        saved = [w.detach().clone() for w in self.weights]
        with torch.no_grad():
            for w, d in zip(self.weights, deltas):
                w.add_(d)
        try:
            yield
        finally:
            with torch.no_grad():
                for w, s in zip(self.weights, saved):
                    w.copy_(s)
