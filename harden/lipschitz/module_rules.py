"""Built-in Lipschitz rules for modules, keyed by module class (activations: see ``activation_rules``)."""

from __future__ import annotations

import math

import torch
from torch import nn

from harden.lipschitz.context import GraphBounds, ModuleRule, Unsupported
from harden.lipschitz.spectral import adaptive_overlap, as_tuple, conv_spectral_norm, max_pool_factor
from harden.model import Normalize

Shape = tuple[int, ...] | None


def _one(mod: nn.Module, in_shape: Shape, graph: GraphBounds) -> tuple[float, str]:
    """Identity, reshaping, dropout (eval) and zero padding: norm 1."""
    return 1.0, ""


def _convolution(mod: nn.Module, in_shape: Shape, graph: GraphBounds) -> tuple[float, str]:
    if in_shape is None:
        raise Unsupported("convolution with unknown input size")
    return conv_spectral_norm(mod, in_shape, n_iter=graph.n_iter, tol=graph.tol), "spectral norm on input"


def _linear(mod: nn.Module, in_shape: Shape, graph: GraphBounds) -> tuple[float, str]:
    return graph.matrix_norm(mod.weight), "largest singular value"


def _batch_norm(mod: nn.Module, in_shape: Shape, graph: GraphBounds) -> tuple[float, str]:
    """Eval-mode batch norm scales each channel by ``gamma / sqrt(var + eps)``."""
    if mod.running_var is None:
        raise Unsupported("batch norm without running statistics (uses batch statistics)")
    scale = 1.0 / torch.sqrt(mod.running_var.detach().double() + mod.eps)
    if mod.weight is not None:
        scale = scale * mod.weight.detach().double()
    return float(scale.abs().max()), "max |gamma/sqrt(var+eps)|"


def _normalize(mod: nn.Module, in_shape: Shape, graph: GraphBounds) -> tuple[float, str]:
    return float((1.0 / mod.std.detach().double()).abs().max()), "1 / min std"


def _max_pool(mod: nn.Module, in_shape: Shape, graph: GraphBounds) -> tuple[float, str]:
    n = 1 if isinstance(mod, nn.MaxPool1d) else 3 if isinstance(mod, nn.MaxPool3d) else 2
    k = as_tuple(mod.kernel_size, n)
    s = as_tuple(mod.stride if mod.stride is not None else mod.kernel_size, n)
    return max_pool_factor(k, s, as_tuple(mod.dilation, n)), "window overlap"


def _adaptive_max_pool(mod: nn.Module, in_shape: Shape, graph: GraphBounds) -> tuple[float, str]:
    if in_shape is None:
        raise Unsupported("adaptive max pool with unknown input size")
    spatial = in_shape[1:]
    out = (as_tuple(mod.output_size, len(spatial)) if not isinstance(mod.output_size, int)
           else (mod.output_size,) * len(spatial))
    count = 1
    for size, o in zip(spatial, out):
        count *= adaptive_overlap(size, o if o is not None else size)
    return math.sqrt(count), "window overlap"


def _linear_operator(mod: nn.Module, in_shape: Shape, graph: GraphBounds) -> tuple[float, str]:
    """Average pooling, resampling, reflection padding, transposed convolutions: the operator norm."""
    if in_shape is None:
        raise Unsupported(f"{type(mod).__name__} with unknown input size")
    return graph.linear_norm(mod, (1, *in_shape)), "linear operator norm"


def _not_lipschitz(mod: nn.Module, in_shape: Shape, graph: GraphBounds) -> tuple[float, str]:
    """Normalizations by the input's own statistics and attention: no global bound."""
    raise Unsupported(f"{type(mod).__name__} is not globally Lipschitz")


def _table(*groups: tuple[tuple[type[nn.Module], ...], ModuleRule]) -> dict[type[nn.Module], ModuleRule]:
    return {cls: rule for classes, rule in groups for cls in classes}


MODULE_RULES: dict[type[nn.Module], ModuleRule] = _table(
    ((nn.Identity, nn.Flatten, nn.Unflatten, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
      nn.PixelShuffle, nn.PixelUnshuffle, nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d), _one),
    ((nn.Conv1d, nn.Conv2d, nn.Conv3d), _convolution),
    ((nn.Linear,), _linear),
    ((nn.modules.batchnorm._BatchNorm,), _batch_norm),
    ((Normalize,), _normalize),
    ((nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d), _max_pool),
    ((nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d), _adaptive_max_pool),
    ((nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
      nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d, nn.ReflectionPad1d, nn.ReflectionPad2d,
      nn.ReplicationPad1d, nn.ReplicationPad2d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d),
     _linear_operator),
    ((nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LocalResponseNorm,
      nn.MultiheadAttention), _not_lipschitz),
)
