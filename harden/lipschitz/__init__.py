"""An upper bound on a network's l2 Lipschitz constant, read off its traced graph (Dong et al.).

Every operation gets a bound on its own Lipschitz constant: convolutions the spectral norm of the
convolution *as an operator on its input size* (power iteration with ``conv2d`` and its adjoint
``conv_transpose2d``), linear layers their largest singular value, batch norm in eval mode its
largest ``|gamma / sqrt(var + eps)|``, activations their true slope bound (ReLU 1, SiLU 1.0998,
GELU 1.1289, ...: from their families in :mod:`harden.graph.activation_families`), pooling its exact
or worst-case factor. The bound of a node is the product of the bounds along the path from the
input, summed over the branches an addition merges (a residual block ``x + f(x)`` gets
``1 + Lip(f)`` times its input's bound), and ``sqrt(sum of squares)`` for concatenations.

Power iteration converges from below, so each norm is an estimate that reaches the exact value
within its tolerance; the network bound itself is loose by construction (it ignores how layers
align), which is what makes it cheap and differentiable as a training penalty
(:func:`spectral_penalty`, the sum of the log spectral norms of the convolutions and linear layers).

Layout: ``result`` (the result and its text), ``spectral`` (operator norms), ``context`` (what a
rule reads), ``module_rules``/``operation_rules``/``activation_rules`` and ``registry`` (the rule
table, keyed by operation; :func:`register_rule` adds to it), ``bound`` (the graph walk),
``penalty`` (the training penalty).
"""

from harden.lipschitz.bound import lipschitz_bound
from harden.lipschitz.context import GraphBounds, Operation, Unsupported
from harden.lipschitz.penalty import SpectralPenalty, spectral_penalty
from harden.lipschitz.registry import register_rule
from harden.lipschitz.result import LipschitzReport, LipschitzRow
from harden.lipschitz.spectral import (
    DEFAULT_ITERATIONS,
    DEFAULT_TOLERANCE,
    EXACT_SVD_LIMIT,
    conv_spectral_norm,
    linear_operator_norm,
    matrix_spectral_norm,
)

__all__ = [
    "DEFAULT_ITERATIONS",
    "DEFAULT_TOLERANCE",
    "EXACT_SVD_LIMIT",
    "GraphBounds",
    "LipschitzReport",
    "LipschitzRow",
    "Operation",
    "SpectralPenalty",
    "Unsupported",
    "conv_spectral_norm",
    "linear_operator_norm",
    "lipschitz_bound",
    "matrix_spectral_norm",
    "register_rule",
    "spectral_penalty",
]
