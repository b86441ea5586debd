"""Straight-through gradients (BPDA): modules whose backward an attack may take as the identity.

Some transforms insert operators whose gradient is zero or useless over much of their input (MeanSparse
replaces small deviations from a channel's mean by the mean: its gradient there is zero). A gradient
attack run through them as they are may fail for want of a gradient rather than for want of an adversarial
example (*gradient masking*). Backward Pass Differentiable Approximation (Athalye et al. 2018) keeps the
forward pass and replaces the backward pass of such an operator by the identity's.

A transform declares this by inserting :class:`StraightThrough` modules (and setting
``Transform.straight_through``); :func:`straight_through` is the context under which every such module
of a model passes gradients straight through::

    with straight_through(model) as count:
        x_adv = attack(model, x, y)   # forward outputs unchanged, gradients as if the operators were identities
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from harden.errors import HardenError


class StraightThrough(nn.Module):
    """Base class of an inserted operator ``y = f(x)`` with ``y.shape == x.shape`` whose backward an attack
    may replace by the identity's: under :func:`straight_through` its output is
    ``f(x).detach() + (x - x.detach())`` (``x``: its first argument), equal to ``f(x)`` bit for bit, with the
    gradient of ``x``."""


def straight_through_modules(model: nn.Module) -> list[tuple[str, StraightThrough]]:
    """The :class:`StraightThrough` modules of ``model`` with their paths (each module once)."""
    return [(path, m) for path, m in model.named_modules() if isinstance(m, StraightThrough)]


def _identity_backward(module: nn.Module, args: tuple[Any, ...], output: Any) -> torch.Tensor:
    """The forward hook: the module's output with the gradient of its first argument."""
    x = args[0] if args else None
    if not isinstance(x, torch.Tensor) or not isinstance(output, torch.Tensor) or x.shape != output.shape:
        got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        want = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise HardenError(f"{type(module).__name__} is declared straight-through but maps {want} to {got}; "
                          "a straight-through module must return a tensor shaped like its input")
    return output.detach() + (x - x.detach())


@contextlib.contextmanager
def straight_through(model: nn.Module) -> Iterator[int]:
    """Within the block, every :class:`StraightThrough` module of ``model`` keeps its forward output but passes
    gradients as the identity does (BPDA). Yields how many modules it changed (0: the model has none)."""
    handles = [m.register_forward_hook(_identity_backward) for _, m in straight_through_modules(model)]
    try:
        yield len(handles)
    finally:
        for handle in handles:
            handle.remove()
