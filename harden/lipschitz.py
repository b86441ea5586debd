"""An upper bound on a network's l2 Lipschitz constant, read off its traced graph (Dong et al.).

Every operation gets a bound on its own Lipschitz constant: convolutions the spectral norm of the
convolution *as an operator on its input size* (power iteration with ``conv2d`` and its adjoint
``conv_transpose2d``), linear layers their largest singular value, batch norm in eval mode its
largest ``|gamma / sqrt(var + eps)|``, activations their true slope bound (ReLU 1, SiLU 1.0998,
GELU 1.1289, ...), pooling its exact or worst-case factor. The bound of a node is the product of
the bounds along the path from the input, summed over the branches an addition merges (a residual
block ``x + f(x)`` gets ``1 + Lip(f)`` times its input's bound), and ``sqrt(sum of squares)`` for
concatenations.

Power iteration converges from below, so each norm is an estimate that reaches the exact value
within its tolerance; the network bound itself is loose by construction (it ignores how layers
align), which is what makes it cheap and differentiable as a training penalty
(:func:`spectral_penalty`, the sum of the log spectral norms of the convolutions and linear layers).
"""

from __future__ import annotations

import math
import operator
import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from harden.errors import UsageError
from harden.graph import node_module_path, shape_of, trace_with_shapes
from harden.graph.tracing import eval_mode
from harden.model import HardenedModel, Normalize

# Largest slope of smooth activations (max over x of |f'(x)|), rounded up.
SILU_LIPSCHITZ = 1.09984
GELU_LIPSCHITZ = 1.12891
GELU_TANH_LIPSCHITZ = 1.12900
MISH_LIPSCHITZ = 1.08850
SELU_LIPSCHITZ = 1.05070098735548 * 1.6732632423543772

DEFAULT_ITERATIONS = 50
DEFAULT_TOLERANCE = 1e-5


@dataclass
class LipschitzRow:
    """One operation of the network and the bound on its own Lipschitz constant."""

    layer: str
    type: str
    input_size: tuple[int, ...] | None
    norm: float
    note: str = ""


@dataclass
class LipschitzReport:
    """An upper bound on ``||f(x) - f(y)||_2 / ||x - y||_2`` (inputs in [0, 1], logits out) and its parts.

    ``bound`` is ``inf`` when an operation has no global bound (``unsupported`` says which).
    A logit difference ``f_i - f_j`` changes by at most ``margin_bound = sqrt(2) * bound`` per unit
    of input change, so a margin ``m`` is certified for perturbations up to ``m / margin_bound``.
    """

    bound: float
    input_size: tuple[int, ...]
    rows: list[LipschitzRow] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)

    @property
    def margin_bound(self) -> float:
        return math.sqrt(2.0) * self.bound

    def to_dict(self) -> dict[str, Any]:
        return {"bound": self.bound, "margin_bound": self.margin_bound, "input_size": list(self.input_size),
                "unsupported": list(self.unsupported), "rows": [asdict(r) for r in self.rows]}

    def table(self, *, only_nontrivial: bool = False) -> str:
        """The per-layer table as text (``only_nontrivial`` hides rows whose norm is exactly 1)."""
        rows = [r for r in self.rows if not (only_nontrivial and r.norm == 1.0)]
        cells = [("layer", "type", "input size", "norm")]
        for r in rows:
            size = "x".join(map(str, r.input_size)) if r.input_size else "-"
            cells.append((r.layer, r.type + (f" ({r.note})" if r.note else ""), size, _fmt(r.norm)))
        widths = [max(len(c[i]) for c in cells) for i in range(4)]
        lines = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
                 for row in cells]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def summary(self) -> str:
        """One or two lines: the bound (and why it is infinite, if it is)."""
        text = f"Lipschitz upper bound (l2, input {'x'.join(map(str, self.input_size))}): {_fmt(self.bound)}"
        if math.isfinite(self.bound):
            text += f"; logit-margin bound {_fmt(self.margin_bound)}"
        if self.unsupported:
            text += "\nno global bound for: " + "; ".join(self.unsupported[:5])
            if len(self.unsupported) > 5:
                text += f"; ... ({len(self.unsupported)} in all)"
        return text


def _fmt(v: float) -> str:
    if not math.isfinite(v):
        return "inf"
    return f"{v:.4g}" if 1e-3 <= abs(v) < 1e5 or v == 0 else f"{v:.3e}"


# ------------------------------------------------------------------------------------ power iteration


def _tuple(v: int | Sequence[int], n: int) -> tuple[int, ...]:
    return (int(v),) * n if isinstance(v, int) else tuple(int(x) for x in v)


_CONV_FNS = {1: (F.conv1d, F.conv_transpose1d), 2: (F.conv2d, F.conv_transpose2d), 3: (F.conv3d, F.conv_transpose3d)}


class _ConvOperator:
    """A convolution without bias as a linear operator on inputs of shape ``(1, *in_shape)``.

    The adjoint is ``conv_transposeNd`` with the output padding that restores the input size; string
    padding or non-zero padding modes fall back to autograd for the adjoint.
    """

    def __init__(self, conv: nn.Module, in_shape: Sequence[int]) -> None:
        n = conv.weight.dim() - 2
        self.n = n
        self.in_shape = (1, *(int(s) for s in in_shape))
        self.stride = _tuple(conv.stride, n)
        self.dilation = _tuple(conv.dilation, n)
        self.groups = conv.groups
        self.padding_mode = getattr(conv, "padding_mode", "zeros")
        self.padding: Any = conv.padding if isinstance(conv.padding, str) else _tuple(conv.padding, n)
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


def _unit(t: torch.Tensor) -> torch.Tensor:
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
    q = _unit(x.reshape(-1))
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
    op = _ConvOperator(conv, input_size)
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


def _max_pool_factor(kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int]) -> float:
    """sqrt of the largest number of pooling windows one input element can fall into."""
    count = 1
    for k, s, d in zip(kernel, stride, dilation):
        count *= min(k, math.ceil(((k - 1) * d + 1) / s))
    return math.sqrt(count)


def _adaptive_overlap(size: int, out: int) -> int:
    covers = [0] * size
    for i in range(out):
        start, end = (i * size) // out, -((-(i + 1) * size) // out)
        for j in range(start, end):
            covers[j] += 1
    return max(covers) if covers else 1


# --------------------------------------------------------------------------------- per-operation bounds

_ONE_LIPSCHITZ_MODULES = (
    nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Tanh, nn.Softplus, nn.Softsign, nn.Identity, nn.Flatten, nn.Unflatten,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.PixelShuffle, nn.PixelUnshuffle,
    nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d, nn.CELU, nn.Tanhshrink,
)
_LINEAR_MODULES = (
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d, nn.ReflectionPad1d, nn.ReflectionPad2d,
    nn.ReplicationPad1d, nn.ReplicationPad2d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
)
_NOT_LIPSCHITZ = (nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
                  nn.LocalResponseNorm, nn.MultiheadAttention)


class _Unsupported(Exception):
    pass


def _activation_norm(mod: nn.Module) -> tuple[float, str] | None:
    if isinstance(mod, _ONE_LIPSCHITZ_MODULES):
        return 1.0, ""
    if isinstance(mod, nn.LeakyReLU):
        return max(1.0, abs(mod.negative_slope)), ""
    if isinstance(mod, nn.PReLU):
        return max(1.0, float(mod.weight.detach().abs().max())), ""
    if isinstance(mod, nn.ELU):
        return max(1.0, abs(mod.alpha)), ""
    if isinstance(mod, nn.SELU):
        return SELU_LIPSCHITZ, ""
    if isinstance(mod, nn.SiLU):
        return SILU_LIPSCHITZ, ""
    if isinstance(mod, nn.GELU):
        return (GELU_TANH_LIPSCHITZ if mod.approximate == "tanh" else GELU_LIPSCHITZ), ""
    if isinstance(mod, nn.Mish):
        return MISH_LIPSCHITZ, ""
    if isinstance(mod, nn.Hardswish):
        return 1.5, ""
    if isinstance(mod, nn.Sigmoid):
        return 0.25, ""
    if isinstance(mod, nn.Hardsigmoid):
        return 1.0 / 6.0, ""
    if isinstance(mod, (nn.Softmax, nn.Softmax2d)):
        return 0.5, ""
    return None


class _Analyzer:
    def __init__(self, traced_gm: fx.GraphModule, n_iter: int, tol: float) -> None:
        self.gm = traced_gm
        self.modules = dict(traced_gm.named_modules())
        self.n_iter = n_iter
        self.tol = tol
        self.rows: list[LipschitzRow] = []
        self.unsupported: list[str] = []
        self._const_cache: dict[fx.Node, Any] = {}
        self._norm_cache: dict[tuple[int, tuple[int, ...] | None], tuple[float, str]] = {}
        dev = next((p.device for p in traced_gm.parameters()), torch.device("cpu"))
        self.device = dev

    # -- constants
    def const(self, v: Any) -> Any:
        if not isinstance(v, fx.Node):
            if isinstance(v, (list, tuple)):
                return type(v)(self.const(x) for x in v)
            if isinstance(v, dict):
                return {k: self.const(x) for k, x in v.items()}
            return v
        if v in self._const_cache:
            return self._const_cache[v]
        if v.op == "get_attr":
            obj: Any = self.gm
            for part in str(v.target).split("."):
                obj = getattr(obj, part)
            out = obj.detach() if isinstance(obj, torch.Tensor) else obj
        elif v.op == "call_function":
            out = v.target(*self.const(v.args), **self.const(v.kwargs))
        elif v.op == "call_method":
            args = self.const(v.args)
            out = getattr(args[0], v.target)(*args[1:], **self.const(v.kwargs))
        elif v.op == "call_module":
            out = self.modules[str(v.target)](*self.const(v.args), **self.const(v.kwargs))
        else:
            raise _Unsupported(f"cannot evaluate constant {v.name}")
        self._const_cache[v] = out
        return out

    # -- module norms
    def module_norm(self, mod: nn.Module, in_shape: tuple[int, ...] | None) -> tuple[float, str]:
        key = (id(mod), in_shape)
        if key not in self._norm_cache:
            self._norm_cache[key] = self._module_norm(mod, in_shape)
        return self._norm_cache[key]

    def _module_norm(self, mod: nn.Module, in_shape: tuple[int, ...] | None) -> tuple[float, str]:
        act = _activation_norm(mod)
        if act is not None:
            return act
        if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            if in_shape is None:
                raise _Unsupported("convolution with unknown input size")
            norm = conv_spectral_norm(mod, in_shape, n_iter=self.n_iter, tol=self.tol)
            return norm, "spectral norm on input"
        if isinstance(mod, nn.Linear):
            return self.matrix_norm(mod.weight), "largest singular value"
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            if mod.running_var is None:
                raise _Unsupported("batch norm without running statistics (uses batch statistics)")
            scale = 1.0 / torch.sqrt(mod.running_var.detach().double() + mod.eps)
            if mod.weight is not None:
                scale = scale * mod.weight.detach().double()
            return float(scale.abs().max()), "max |gamma/sqrt(var+eps)|"
        if isinstance(mod, Normalize):
            return float((1.0 / mod.std.detach().double()).abs().max()), "1 / min std"
        if isinstance(mod, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)):
            n = 1 if isinstance(mod, nn.MaxPool1d) else 3 if isinstance(mod, nn.MaxPool3d) else 2
            k = _tuple(mod.kernel_size, n)
            s = _tuple(mod.stride if mod.stride is not None else mod.kernel_size, n)
            return _max_pool_factor(k, s, _tuple(mod.dilation, n)), "window overlap"
        if isinstance(mod, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)):
            if in_shape is None:
                raise _Unsupported("adaptive max pool with unknown input size")
            spatial = in_shape[1:]
            out = _tuple(mod.output_size, len(spatial)) if not isinstance(mod.output_size, int) else (
                (mod.output_size,) * len(spatial))
            count = 1
            for size, o in zip(spatial, out):
                count *= _adaptive_overlap(size, o if o is not None else size)
            return math.sqrt(count), "window overlap"
        if isinstance(mod, _LINEAR_MODULES):
            if in_shape is None:
                raise _Unsupported(f"{type(mod).__name__} with unknown input size")
            return self.linear_norm(mod, (1, *in_shape)), "linear operator norm"
        if isinstance(mod, _NOT_LIPSCHITZ):
            raise _Unsupported(f"{type(mod).__name__} is not globally Lipschitz")
        raise _Unsupported(f"no Lipschitz rule for {type(mod).__name__}")

    def matrix_norm(self, weight: torch.Tensor) -> float:
        return matrix_spectral_norm(weight, n_iter=self.n_iter, tol=self.tol)

    def linear_norm(self, fn: Callable[[torch.Tensor], torch.Tensor], shape: tuple[int, ...]) -> float:
        dtype = next((p.dtype for p in self.gm.parameters()), torch.float32)
        return linear_operator_norm(fn, shape, device=self.device, dtype=dtype, n_iter=self.n_iter, tol=self.tol)


def _is_tensorish(node: Any) -> bool:
    """Whether shape propagation saw a tensor (or a tuple holding tensors) come out of ``node``."""
    if not isinstance(node, fx.Node):
        return False
    meta = node.meta.get("tensor_meta", node.meta.get("val"))

    def has_tensor(m: Any) -> bool:
        if hasattr(m, "shape") and hasattr(m, "dtype"):  # a tensor, a fake tensor or ShapeProp's TensorMetadata
            return True
        return isinstance(m, (list, tuple)) and any(has_tensor(x) for x in m)

    return meta is not None and has_tensor(meta)


def _tensor_nodes(args: Any) -> list[fx.Node]:
    out: list[fx.Node] = []
    fx.node.map_arg(args, lambda n: out.append(n) or n)
    return out


_ADD = {operator.add, operator.iadd, torch.add}
_SUB = {operator.sub, operator.isub, torch.sub}
_MUL = {operator.mul, operator.imul, torch.mul}
_DIV = {operator.truediv, operator.itruediv, torch.div, torch.true_divide}
_CAT = {torch.cat, torch.concat, torch.stack, torch.hstack, torch.vstack}
_PASS_FUNCS = {
    operator.getitem, torch.flatten, torch.reshape, torch.permute, torch.transpose, torch.squeeze, torch.unsqueeze,
    torch.chunk, torch.split, torch.unbind, torch.narrow, torch.select, torch.movedim, torch.clone,
    torch.tensor_split, operator.neg, operator.pos, torch.neg, F.dropout, F.dropout1d, F.dropout2d, F.dropout3d,
    torch.nn.functional.relu, torch.relu, F.relu6, F.hardtanh, torch.tanh, F.tanh, F.softplus, torch.clamp, torch.clip,
    F.softsign,
}
_PASS_METHODS = {
    "flatten", "view", "reshape", "permute", "transpose", "contiguous", "squeeze", "unsqueeze", "chunk", "split",
    "unbind", "narrow", "select", "clone", "to", "float", "double", "half", "type_as", "movedim", "t", "neg",
    "relu", "relu_", "tanh", "tanh_", "clamp", "clamp_", "clip", "detach", "view_as", "reshape_as", "tensor_split",
    "cpu", "cuda", "__getitem__",
}
_REPEAT_METHODS = {"expand", "expand_as", "repeat", "broadcast_to", "repeat_interleave"}
_LINEAR_FUNCS = {
    F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
    F.interpolate, F.upsample, F.pad, torch.mean, torch.sum, F.pixel_shuffle, F.pixel_unshuffle,
}
_LINEAR_METHODS = {"mean", "sum"}
_NORM_MESSAGE = "normalizing by the input's own statistics is not globally Lipschitz"
_NOT_LIPSCHITZ_FUNCS: dict[Any, str] = {
    F.layer_norm: "layer norm: " + _NORM_MESSAGE,
    F.group_norm: "group norm: " + _NORM_MESSAGE,
    F.instance_norm: "instance norm: " + _NORM_MESSAGE,
    F.normalize: "l2 normalization: " + _NORM_MESSAGE,
    F.scaled_dot_product_attention: "attention (products of input-dependent tensors) has no global bound",
    torch.matmul: "a product of input-dependent tensors has no global bound",
    torch.bmm: "a product of input-dependent tensors has no global bound",
    operator.matmul: "a product of input-dependent tensors has no global bound",
}
_MAX_POOL_FUNCS = {F.max_pool1d: 1, F.max_pool2d: 2, F.max_pool3d: 3}


def _activation_fn_norm(node: fx.Node) -> float | None:
    t = node.target
    if t in (F.silu, "silu", "silu_"):
        return SILU_LIPSCHITZ
    if t in (F.gelu, "gelu"):
        return GELU_TANH_LIPSCHITZ if node.kwargs.get("approximate") == "tanh" else GELU_LIPSCHITZ
    if t in (F.mish, "mish"):
        return MISH_LIPSCHITZ
    if t in (F.hardswish, "hardswish"):
        return 1.5
    if t in (torch.sigmoid, F.sigmoid, "sigmoid", "sigmoid_"):
        return 0.25
    if t in (F.hardsigmoid, "hardsigmoid"):
        return 1.0 / 6.0
    if t in (F.leaky_relu, "leaky_relu"):
        slope = node.kwargs.get("negative_slope", node.args[1] if len(node.args) > 1 else 0.01)
        return max(1.0, abs(float(slope)))
    if t in (F.elu, "elu"):
        alpha = node.kwargs.get("alpha", node.args[1] if len(node.args) > 1 else 1.0)
        return max(1.0, abs(float(alpha)))
    if t in (F.selu, "selu"):
        return SELU_LIPSCHITZ
    if t in (F.softmax, torch.softmax, "softmax"):
        return 0.5
    return None


def _propagate(an: _Analyzer, graph: fx.Graph) -> float:
    """The bound of the graph's output: products along paths, sums over additions."""
    nodes = list(graph.nodes)
    output = next(n for n in reversed(nodes) if n.op == "output")
    # only nodes the output depends on matter
    needed: set[fx.Node] = set()
    stack = [output]
    while stack:
        n = stack.pop()
        if n in needed:
            continue
        needed.add(n)
        stack.extend(_tensor_nodes((n.args, n.kwargs)))
    dep: dict[fx.Node, bool] = {}
    lip: dict[fx.Node, float] = {}

    def L(v: Any) -> float:
        return lip.get(v, 0.0) if isinstance(v, fx.Node) else 0.0

    def is_dep(v: Any) -> bool:
        return isinstance(v, fx.Node) and dep.get(v, False)

    for node in nodes:
        if node not in needed:
            continue
        if node.op == "placeholder":
            dep[node], lip[node] = True, 1.0
            continue
        if node.op == "output":
            outs = [n for n in _tensor_nodes(node.args) if dep.get(n)]
            bound = math.sqrt(sum(L(n) ** 2 for n in outs)) if len(outs) > 1 else (L(outs[0]) if outs else 0.0)
            return bound
        inputs = _tensor_nodes((node.args, node.kwargs))
        dep[node] = node.op != "get_attr" and any(dep.get(n, False) and _is_tensorish(n) for n in inputs)
        if not dep[node] or not _is_tensorish(node):
            dep[node] = dep[node] and _is_tensorish(node)
            lip[node] = 0.0
            continue
        try:
            lip[node] = _node_bound(an, node, L, is_dep)
        except _Unsupported as exc:
            an.unsupported.append(f"{_label(node)}: {exc}")
            lip[node] = math.inf
    raise AssertionError("graph without output")  # pragma: no cover


def _label(node: fx.Node) -> str:
    if node.op == "call_module":
        return str(node.target)
    path = node_module_path(node)
    return f"{path}:{node.name}" if path else node.name


def _in_shape(node: fx.Node) -> tuple[int, ...] | None:
    if not node.args or not isinstance(node.args[0], fx.Node):
        return None
    shape = shape_of(node.args[0])
    return tuple(shape[1:]) if shape is not None else None


def _node_bound(an: _Analyzer, node: fx.Node, L: Callable[[Any], float], is_dep: Callable[[Any], bool]) -> float:
    target = node.target
    first = node.args[0] if node.args else None
    in_shape = _in_shape(node)

    def row(kind: str, norm: float, note: str = "") -> None:
        an.rows.append(LipschitzRow(_label(node), kind, in_shape, norm, note))

    if node.op == "call_module":
        mod = an.modules[str(target)]
        deps = [a for a in _tensor_nodes((node.args, node.kwargs)) if is_dep(a)]
        if len(deps) != 1 or deps[0] is not first:
            raise _Unsupported(f"{type(mod).__name__} with several input-dependent arguments")
        norm, note = an.module_norm(mod, in_shape)
        row(type(mod).__name__, norm, note)
        return norm * L(first)

    name = target if isinstance(target, str) else getattr(target, "__name__", str(target))
    is_method = node.op == "call_method"
    if target in _ADD or target in _SUB or (is_method and target in ("add", "add_", "sub", "sub_")):
        alpha = abs(float(node.kwargs.get("alpha", 1.0)))
        a, b = (node.args + (None, None))[:2]
        return L(a) + alpha * L(b)
    if target in _MUL or (is_method and target in ("mul", "mul_")):
        a, b = node.args[0], node.args[1]
        if is_dep(a) and is_dep(b):
            raise _Unsupported("product of two input-dependent tensors (a gate or attention) has no global bound")
        x, c = (a, b) if is_dep(a) else (b, a)
        factor = _max_abs(an.const(c))
        row(name, factor, "constant factor")
        return factor * L(x)
    if target in _DIV or (is_method and target in ("div", "div_", "truediv")):
        a, b = node.args[0], node.args[1]
        if is_dep(b):
            raise _Unsupported("division by an input-dependent tensor has no global bound")
        value = an.const(b)
        factor = float(torch.as_tensor(value, dtype=torch.float64).abs().min().reciprocal())
        row(name, factor, "constant divisor")
        return factor * L(a)
    if target in _CAT or (is_method and target == "cat"):
        items = node.args[0] if node.args else node.kwargs.get("tensors", ())
        return math.sqrt(sum(L(t) ** 2 for t in items if is_dep(t)))
    if target is operator.getitem and shape_of(first) is not None and _advanced_index(node.args[1]):
        raise _Unsupported("indexing with a list or tensor can repeat elements")
    if target in _PASS_FUNCS or (is_method and target in _PASS_METHODS):
        return L(first)
    if target in (torch.amax, F.adaptive_max_pool1d, F.adaptive_max_pool2d) or (is_method and target == "amax"):
        if target in (F.adaptive_max_pool1d, F.adaptive_max_pool2d):
            src = shape_of(first)
            out = shape_of(node)
            if src is None or out is None:
                raise _Unsupported(f"{name} with unknown shapes")
            count = 1
            for size, o in zip(src[2:], out[2:]):
                count *= _adaptive_overlap(size, o)
            factor = math.sqrt(count)
        else:
            factor = 1.0  # a max over disjoint groups of elements
        row(name, factor, "window overlap")
        return factor * L(first)
    if is_method and target in _REPEAT_METHODS:
        out, src = shape_of(node), shape_of(first)
        if out is None or src is None:
            raise _Unsupported(f"{name} with unknown shapes")
        factor = math.sqrt(math.prod(out) / max(1, math.prod(src)))
        row(name, factor, "replication")
        return factor * L(first)
    act = _activation_fn_norm(node)
    if act is not None:
        row(name, act)
        return act * L(first)
    if target in _MAX_POOL_FUNCS:
        n = _MAX_POOL_FUNCS[target]
        args = list(an.const(node.args[1:]))
        kw = an.const(node.kwargs)
        k = kw.get("kernel_size", args[0] if args else None)
        s = kw.get("stride", args[1] if len(args) > 1 else None) or k
        d = kw.get("dilation", args[3] if len(args) > 3 else 1)
        factor = _max_pool_factor(_tuple(k, n), _tuple(s, n), _tuple(d, n))
        row(name, factor, "window overlap")
        return factor * L(first)
    if target in (F.linear,):
        w = an.const(node.args[1] if len(node.args) > 1 else node.kwargs["weight"])
        norm = an.matrix_norm(w)
        row(name, norm, "largest singular value")
        return norm * L(first)
    if target in _LINEAR_FUNCS or (is_method and target in _LINEAR_METHODS) or target in (
            F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d):
        if any(is_dep(a) for a in _tensor_nodes((node.args[1:], node.kwargs))):
            raise _Unsupported(f"{name} with several input-dependent arguments")
        rest, kwargs = an.const(node.args[1:]), an.const(node.kwargs)
        if is_method:
            fn = lambda t: getattr(t, target)(*rest, **kwargs)  # noqa: E731
        else:
            fn = lambda t: target(t, *rest, **kwargs)  # noqa: E731
        src = shape_of(first)
        if src is None:
            raise _Unsupported(f"{name} with unknown input size")
        norm = an.linear_norm(fn, (1, *src[1:]))
        row(name, norm, "linear operator norm")
        return norm * L(first)
    if target in (torch.matmul, operator.matmul) or (is_method and target == "matmul"):
        a, b = node.args[0], node.args[1]
        if not (is_dep(a) and is_dep(b)):
            const = an.const(b if is_dep(a) else a)
            if isinstance(const, torch.Tensor) and const.dim() == 2:
                norm = an.matrix_norm(const)
                row(name, norm, "largest singular value")
                return norm * L(a if is_dep(a) else b)
    if target in _NOT_LIPSCHITZ_FUNCS:
        raise _Unsupported(_NOT_LIPSCHITZ_FUNCS[target])
    raise _Unsupported(f"no Lipschitz rule for {name}")


def _advanced_index(index: Any) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, (list, torch.Tensor, fx.Node)) for i in items)


def _max_abs(value: Any) -> float:
    return float(torch.as_tensor(value, dtype=torch.float64).abs().max())


class _Body(nn.Module):
    """A HardenedModel without its normalization (kept as the first row of the table)."""

    def __init__(self, model: HardenedModel) -> None:
        super().__init__()
        self.input_transforms = model.input_transforms
        self.net = model.net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.input_transforms(x))


def lipschitz_bound(model: HardenedModel | nn.Module, input_size: Sequence[int] | int | None = None, *,
                    n_iter: int = DEFAULT_ITERATIONS, tol: float = DEFAULT_TOLERANCE) -> LipschitzReport:
    """An upper bound on the l2 Lipschitz constant of ``model`` at ``input_size`` (C, H, W), with a per-layer table.

    A :class:`HardenedModel` takes images in [0, 1] and its own input size by default; its
    normalization ``(x - mean) / std`` contributes ``1 / min(std)``. Batch norm is taken in eval mode.
    Operator norms take at most ``n_iter`` Lanczos steps each and stop when the Ritz residual falls
    below ``tol`` (relative).
    """
    if isinstance(input_size, int):
        input_size = (3, input_size, input_size)
    rows: list[LipschitzRow] = []
    if isinstance(model, HardenedModel):
        size = tuple(input_size or model.input_size)
        norm_factor = float((1.0 / model.normalize.std.detach().double()).abs().max())
        rows.append(LipschitzRow("normalize", "Normalize", size, norm_factor, "1 / min std"))
        body: nn.Module = _Body(model)
        root: nn.Module = model
    else:
        if input_size is None:
            raise UsageError("lipschitz_bound() on a plain nn.Module needs input_size=(C, H, W)")
        size = tuple(input_size)
        norm_factor = 1.0
        body = root = model
    if len(size) < 1 or min(size) <= 0:
        raise UsageError(f"input size must be positive, got {size}")
    with eval_mode(root):
        traced = trace_with_shapes(body, size)
        an = _Analyzer(traced.gm, n_iter, tol)
        with torch.no_grad():
            bound = _propagate(an, traced.gm.graph)
    return LipschitzReport(norm_factor * bound, size, rows + an.rows, an.unsupported)


# ------------------------------------------------------------------------------------ training penalty


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
            from harden.training import derive_seed

            gen = torch.Generator().manual_seed(derive_seed(self.seed, "spectral-penalty", name))
        return _unit(torch.randn(tuple(shape), generator=gen, dtype=torch.float32).to(device))

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
                layers.append((name, m, _ConvOperator(m, shapes[name])))
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
                    u = _unit(fwd(v, wd))
                    v = _unit(adj(u, wd))
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
