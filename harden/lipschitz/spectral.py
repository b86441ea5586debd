"""Spectral norms of linear operators: convolutions on a given input size, matrices, any linear map.

Power iteration on ``A^T A`` accelerated by Lanczos, matrix-free: a convolution is applied with
``convNd`` and its adjoint ``conv_transposeNd``. Also the worst-case factors of max pooling.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_ITERATIONS = 50
DEFAULT_TOLERANCE = 1e-5


def as_tuple(v: int | Sequence[int], n: int) -> tuple[int, ...]:
    """``v`` as an ``n``-tuple (an int repeated, a sequence as it is)."""
    return (int(v),) * n if isinstance(v, int) else tuple(int(x) for x in v)


_CONV_FNS = {1: (F.conv1d, F.conv_transpose1d), 2: (F.conv2d, F.conv_transpose2d), 3: (F.conv3d, F.conv_transpose3d)}


class ConvOperator:
    """A convolution without bias as a linear operator on inputs of shape ``(1, *in_shape)``.

    The adjoint is ``conv_transposeNd`` with the output padding that restores the input size; string
    padding or non-zero padding modes fall back to autograd for the adjoint.
    """

    def __init__(self, conv: nn.Module, in_shape: Sequence[int]) -> None:
        n = conv.weight.dim() - 2
        self.n = n
        self.in_shape = (1, *(int(s) for s in in_shape))
        self.stride = as_tuple(conv.stride, n)
        self.dilation = as_tuple(conv.dilation, n)
        self.groups = conv.groups
        self.padding_mode = getattr(conv, "padding_mode", "zeros")
        self.padding: Any = conv.padding if isinstance(conv.padding, str) else as_tuple(conv.padding, n)
        self.conv = conv
        self.output_padding: tuple[int, ...] | None = None
        if not isinstance(self.padding, str) and self.padding_mode == "zeros":
            k = conv.weight.shape[2:]
            with torch.no_grad():
                out = self.forward(torch.zeros(self.in_shape, dtype=conv.weight.dtype, device=conv.weight.device),
                                   conv.weight)
            pads = []
            for i in range(n):
                full = (out.shape[2 + i] - 1) * self.stride[i] - 2 * self.padding[i] + self.dilation[i] * (k[i] - 1) + 1
                pads.append(self.in_shape[2 + i] - full)
            if all(0 <= p < max(s, d) for p, s, d in zip(pads, self.stride, self.dilation)):
                self.output_padding = tuple(pads)

    def forward(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if self.padding_mode != "zeros":
            return self.conv._conv_forward(x, weight, None)
        conv, _ = _CONV_FNS[self.n]
        return conv(x, weight, None, self.stride, self.padding, self.dilation, self.groups)

    def adjoint(self, y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if self.output_padding is not None:
            _, conv_t = _CONV_FNS[self.n]
            return conv_t(y, weight, None, self.stride, self.padding, self.output_padding, self.groups,
                          self.dilation)
        with torch.enable_grad():
            x = torch.zeros((y.shape[0], *self.in_shape[1:]), dtype=y.dtype, device=y.device, requires_grad=True)
            (grad,) = torch.autograd.grad(self.forward(x, weight.detach()), x, grad_outputs=y)
        return grad


def unit(t: torch.Tensor) -> torch.Tensor:
    """``t`` scaled to norm 1."""
    return t / t.norm().clamp_min(1e-30)


def _power_iteration(forward: Callable[[torch.Tensor], torch.Tensor],
                     adjoint: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                     n_iter: int, tol: float) -> float:
    """Largest singular value of the linear operator ``forward`` (with its ``adjoint``).

    Power iteration on ``A^T A`` accelerated by Lanczos: the Krylov space of ``n_iter`` steps from
    ``x`` (fully re-orthogonalized) and the top Ritz value of its tridiagonal matrix, which converges
    far faster than the plain iteration when the top singular values are close, as they are for
    convolutions on large inputs. Stops when the Ritz residual falls below ``tol`` (relative).
    """
    n = x.numel()
    steps = max(1, min(int(n_iter), n))
    basis = torch.empty((steps, n), dtype=x.dtype, device=x.device)
    q = unit(x.reshape(-1))
    alphas: list[float] = []
    betas: list[float] = []
    theta = 0.0
    for j in range(steps):
        basis[j] = q
        w = adjoint(forward(q.reshape(x.shape))).reshape(-1)
        a = float(torch.dot(q, w))
        alphas.append(a)
        # full re-orthogonalization against the basis so far (twice is enough)
        for _ in range(2):
            w = w - basis[: j + 1].t() @ (basis[: j + 1] @ w)
        b = float(w.double().norm())
        t = np.diag(np.asarray(alphas)) + np.diag(np.asarray(betas), 1) + np.diag(np.asarray(betas), -1)
        evals, evecs = np.linalg.eigh(t)
        theta = float(evals[-1])
        residual = b * abs(float(evecs[-1, -1]))
        if residual <= tol * max(theta, 1e-30) or b <= 1e-12 * max(theta, 1e-30):
            break
        betas.append(b)
        q = w / b
    return math.sqrt(max(theta, 0.0))


def conv_spectral_norm(conv: nn.Module, input_size: Sequence[int], *, n_iter: int = DEFAULT_ITERATIONS,
                       tol: float = DEFAULT_TOLERANCE, seed: int = 0) -> float:
    """Spectral norm of ``conv`` (bias ignored) as an operator on inputs of shape ``input_size`` (C, H, W).

    Matrix-free: only ``conv2d`` and its adjoint ``conv_transpose2d`` are applied (see :func:`_power_iteration`).
    """
    op = ConvOperator(conv, input_size)
    w = conv.weight.detach()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(op.in_shape, generator=gen, dtype=torch.float32).to(device=w.device, dtype=w.dtype)
    with torch.no_grad():
        return _power_iteration(lambda t: op.forward(t, w), lambda t: op.adjoint(t, w), x, n_iter, tol)


#: Matrices up to this size on their short side get an exact SVD; larger ones Lanczos.
EXACT_SVD_LIMIT = 1024


def matrix_spectral_norm(weight: torch.Tensor, *, n_iter: int = DEFAULT_ITERATIONS,
                         tol: float = DEFAULT_TOLERANCE) -> float:
    """Largest singular value of a matrix: exact SVD when small, Lanczos on ``W^T W`` when large."""
    w = weight.detach()
    if min(w.shape) <= EXACT_SVD_LIMIT:
        return float(torch.linalg.svdvals(w.double())[0])
    x = torch.randn(w.shape[1], generator=torch.Generator().manual_seed(0)).to(device=w.device, dtype=w.dtype)
    with torch.no_grad():
        return _power_iteration(lambda v: w @ v, lambda u: w.t() @ u, x, 2 * n_iter, tol)


def linear_operator_norm(fn: Callable[[torch.Tensor], torch.Tensor], input_shape: Sequence[int], *,
                         device: torch.device | None = None, dtype: torch.dtype = torch.float32,
                         n_iter: int = DEFAULT_ITERATIONS, tol: float = DEFAULT_TOLERANCE, seed: int = 0) -> float:
    """Spectral norm of a linear (or affine) map ``fn`` on tensors of ``input_shape`` (batch included).

    The adjoint comes from autograd; an affine map's offset ``fn(0)`` is removed first.
    """
    shape = tuple(input_shape)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)
    with torch.no_grad():
        offset = fn(torch.zeros_like(x))

    def forward(t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return fn(t) - offset

    def adjoint(y: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            t = torch.zeros_like(x, requires_grad=True)
            (grad,) = torch.autograd.grad(fn(t), t, grad_outputs=y)
        return grad

    return _power_iteration(forward, adjoint, x, n_iter, tol)


def max_pool_factor(kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int]) -> float:
    """sqrt of the largest number of pooling windows one input element can fall into."""
    count = 1
    for k, s, d in zip(kernel, stride, dilation):
        count *= min(k, math.ceil(((k - 1) * d + 1) / s))
    return math.sqrt(count)


def adaptive_overlap(size: int, out: int) -> int:
    """The largest number of adaptive pooling windows (``size`` to ``out``) one position falls into."""
    covers = [0] * size
    for i in range(out):
        start, end = (i * size) // out, -((-(i + 1) * size) // out)
        for j in range(start, end):
            covers[j] += 1
    return max(covers) if covers else 1
