"""Activation families: the module classes, functions and tensor methods of one kind of activation.

Each family also knows its largest slope ``max_x |f'(x)|`` (its Lipschitz constant), possibly raised
by the activation's own parameters (a leaky ReLU's negative slope, an ELU's alpha, a PReLU's weights):
the Lipschitz bound (:mod:`harden.lipschitz`) reads activation slopes from here and nowhere else.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

#: The largest slope of an activation, from its slope parameters (module attributes or call arguments by name).
SlopeRule = Callable[[Mapping[str, Any]], float]

# Largest slope of smooth activations (max over x of |f'(x)|), rounded up.
SILU_LIPSCHITZ = 1.09984
GELU_LIPSCHITZ = 1.12891
GELU_TANH_LIPSCHITZ = 1.12900
MISH_LIPSCHITZ = 1.08850
SELU_LIPSCHITZ = 1.05070098735548 * 1.6732632423543772


def torch_functions(*items: tuple[Any, str]) -> frozenset[Callable[..., Any]]:
    """The callables ``owner.name`` that exist in this torch version."""
    return frozenset(getattr(owner, name) for owner, name in items if hasattr(owner, name))


def _timm_classes(*names: str) -> tuple[type[nn.Module], ...]:
    try:
        from timm.layers import activations as timm_act
    except ImportError:  # pragma: no cover - timm is a dependency
        return ()
    return tuple(getattr(timm_act, n) for n in names if isinstance(getattr(timm_act, n, None), type))


_NN = torch._C._nn


def constant_slope(value: float) -> SlopeRule:
    """A slope that no parameter changes."""
    return lambda params: value


def _largest_abs(value: Any) -> float:
    return float(torch.as_tensor(value).detach().abs().max())


def _relu_slope(params: Mapping[str, Any]) -> float:
    """1 for the positive side; a leaky, randomized or parametric ReLU's negative side may be steeper."""
    return max([1.0, *(_largest_abs(v) for v in params.values() if v is not None)])


def _elu_slope(params: Mapping[str, Any]) -> float:
    return max(1.0, abs(float(params.get("alpha", 1.0))))


def _gelu_slope(params: Mapping[str, Any]) -> float:
    return GELU_TANH_LIPSCHITZ if params.get("approximate") == "tanh" else GELU_LIPSCHITZ


@dataclass(frozen=True)
class ActivationFamily:
    """Module classes, functions and tensor methods that compute one kind of activation.

    ``slope`` gives the family's Lipschitz constant from the values of its ``slope_parameters``
    (those an activation has); ``None`` when the family has no known bound.
    """

    name: str
    modules: tuple[type[nn.Module], ...]
    functions: frozenset[Callable[..., Any]] = frozenset()
    methods: frozenset[str] = frozenset()
    slope: SlopeRule | None = None
    slope_parameters: tuple[str, ...] = ()

    def matches_module(self, module: nn.Module) -> bool:
        return isinstance(module, self.modules)

    def matches_call(self, node: fx.Node) -> bool:
        """Whether ``node`` is a functional call (function or tensor method) of this family."""
        if node.op == "call_function":
            try:
                return node.target in self.functions
            except TypeError:  # unhashable target
                return False
        return node.op == "call_method" and node.target in self.methods


#: The families the ``activation`` transform can replace.
FAMILY_NAMES = ("relu", "gelu", "silu", "elu", "celu", "selu", "softplus", "mish", "hardswish")


def _replaceable_families() -> list[ActivationFamily]:
    return [
        ActivationFamily(
            "relu",
            (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.RReLU, nn.PReLU),
            torch_functions((F, "relu"), (F, "relu_"), (torch, "relu"), (torch, "relu_"), (F, "relu6"),
                            (_NN, "relu6"), (_NN, "relu6_"), (F, "leaky_relu"), (F, "leaky_relu_"),
                            (_NN, "leaky_relu"), (_NN, "leaky_relu_"), (F, "rrelu"), (F, "rrelu_"), (torch, "rrelu"),
                            (torch, "rrelu_"), (F, "prelu"), (torch, "prelu")),
            frozenset({"relu", "relu_", "prelu"}),
            _relu_slope, ("negative_slope", "lower", "upper", "weight"),
        ),
        ActivationFamily("gelu", (nn.GELU, *_timm_classes("GELU", "GELUTanh", "QuickGELU")),
                         torch_functions((F, "gelu"), (_NN, "gelu")), slope=_gelu_slope,
                         slope_parameters=("approximate",)),
        ActivationFamily("silu", (nn.SiLU, *_timm_classes("Swish")),
                         torch_functions((F, "silu"), (_NN, "silu"), (_NN, "silu_")),
                         slope=constant_slope(SILU_LIPSCHITZ)),
        ActivationFamily("elu", (nn.ELU,), torch_functions((F, "elu"), (F, "elu_"), (_NN, "elu"), (_NN, "elu_")),
                         slope=_elu_slope, slope_parameters=("alpha",)),
        # CELU's negative side exp(x / alpha) - 1 has slope below 1 whatever alpha is
        ActivationFamily("celu", (nn.CELU,),
                         torch_functions((F, "celu"), (F, "celu_"), (torch, "celu"), (torch, "celu_")),
                         slope=constant_slope(1.0)),
        ActivationFamily("selu", (nn.SELU,),
                         torch_functions((F, "selu"), (F, "selu_"), (torch, "selu"), (torch, "selu_")),
                         slope=constant_slope(SELU_LIPSCHITZ)),
        ActivationFamily("softplus", (nn.Softplus,), torch_functions((F, "softplus"), (_NN, "softplus")),
                         slope=constant_slope(1.0)),
        ActivationFamily("mish", (nn.Mish, *_timm_classes("Mish")),
                         torch_functions((F, "mish"), (_NN, "mish"), (_NN, "mish_")),
                         slope=constant_slope(MISH_LIPSCHITZ)),
        ActivationFamily("hardswish", (nn.Hardswish, *_timm_classes("HardSwish")),
                         torch_functions((F, "hardswish"), (_NN, "hardswish"), (_NN, "hardswish_")),
                         slope=constant_slope(1.5)),
    ]


def _saturating_families() -> list[ActivationFamily]:
    """Squashing activations: not replaced by the transform, but bounded like the others."""
    return [
        ActivationFamily("sigmoid", (nn.Sigmoid,), torch_functions((torch, "sigmoid"), (F, "sigmoid")),
                         frozenset({"sigmoid", "sigmoid_"}), constant_slope(0.25)),
        ActivationFamily("hardsigmoid", (nn.Hardsigmoid,), torch_functions((F, "hardsigmoid")),
                         slope=constant_slope(1.0 / 6.0)),
        ActivationFamily("tanh", (nn.Tanh,), torch_functions((torch, "tanh"), (F, "tanh")),
                         frozenset({"tanh", "tanh_"}), constant_slope(1.0)),
        ActivationFamily("hardtanh", (nn.Hardtanh,), torch_functions((F, "hardtanh")), slope=constant_slope(1.0)),
        ActivationFamily("softsign", (nn.Softsign,), torch_functions((F, "softsign")), slope=constant_slope(1.0)),
        ActivationFamily("tanhshrink", (nn.Tanhshrink,), slope=constant_slope(1.0)),
        ActivationFamily("softmax", (nn.Softmax, nn.Softmax2d), torch_functions((F, "softmax"), (torch, "softmax")),
                         frozenset({"softmax"}), constant_slope(0.5)),
    ]


@functools.cache
def families() -> dict[str, ActivationFamily]:
    """All activation families by name (built on first use: timm is imported only then).

    The replaceable ones (:data:`FAMILY_NAMES`) come first, then saturating ones such as sigmoid.
    """
    return {fam.name: fam for fam in [*_replaceable_families(), *_saturating_families()]}


def get_family(family: str | ActivationFamily) -> ActivationFamily:
    """The activation family called ``family`` (a key of :func:`families`; KeyError if unknown)."""
    return family if isinstance(family, ActivationFamily) else families()[family]


def family_of_module(module: nn.Module) -> ActivationFamily | None:
    """The first family whose module classes ``module`` is an instance of."""
    return next((fam for fam in families().values() if fam.matches_module(module)), None)


def family_of_call(node: fx.Node) -> ActivationFamily | None:
    """The first family ``node`` is a functional call (function or tensor method) of."""
    return next((fam for fam in families().values() if fam.matches_call(node)), None)


# Modules of these packages are activation functions; calls made inside one of another family
# (timm's HardSigmoid computes relu6(x + 3) / 6) belong to that activation and are left alone.
_ACTIVATION_PACKAGES = ("torch.nn.modules.activation", "timm.layers.activations", "timm.layers.activations_me")


def is_activation_class(cls: type) -> bool:
    """Whether ``cls`` (or a base class) is an activation of torch.nn, timm or one of the families."""
    if any(issubclass(cls, fam.modules) for fam in families().values()):
        return True
    if issubclass(cls, nn.MultiheadAttention):  # lives in torch.nn.modules.activation too
        return False
    return any(getattr(c, "__module__", "") in _ACTIVATION_PACKAGES for c in cls.__mro__[:-1]
               if c is not nn.Module)
