"""The training-method contract and its registry (see :mod:`harden.methods`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harden.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn


class TrainingMethod:
    """One training method. Subclasses set the class attributes and override what differs.

    ``paired``: the loss needs the clean logits as well (TRADES, MART). ``attacks``: False for clean
    training. ``fixed_steps``: the inner attack's steps when the method fixes them (single-step methods),
    else ``--steps``. ``uses_beta``: the loss weighs a term by ``--beta``. ``awp_gamma``/``awp_warmup``:
    the AWP authors' defaults for the method (``awp_gamma`` None: AWP is not offered with it).
    ``searchable``: offered among ``harden search``'s methods.
    """

    name: str = ""
    label: str = ""
    paired: bool = False
    attacks: bool = True
    fixed_steps: int | None = None
    uses_beta: bool = False
    awp_gamma: float | None = None
    awp_warmup: int = 0
    searchable: bool = True
    norms: tuple[str, ...] = ("Linf", "L2")

    def steps(self, steps: int) -> int:
        """The inner attack's steps given ``--steps`` (0 for clean training)."""
        if not self.attacks:
            return 0
        return self.fixed_steps if self.fixed_steps is not None else steps

    def step_size(self, eps: float, steps: int) -> float:
        """The default attack step: 2.5 eps / steps (2/255 for PGD-10 at 8/255)."""
        return 2.5 * eps / steps

    def short_name(self, steps: int) -> str:
        """How tables name a run of the method: ``PGD-10``, ``FGSM-RS``, ``TRADES-5``."""
        n = self.steps(steps)
        upper = self.name.upper()
        return upper if self.fixed_steps is not None or not self.attacks else f"{upper}-{n}"

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, step: float, steps: int,
                norm: str, generator: torch.Generator, options: dict[str, Any]) -> torch.Tensor:
        """The adversarial examples of a training batch (the model's mode is the caller's)."""
        return x.detach()

    def loss(self, logits_adv: torch.Tensor, y: torch.Tensor, *, logits_nat: torch.Tensor | None, beta: float,
             label_smoothing: float) -> torch.Tensor:
        """The training loss of a batch: cross-entropy on the (attacked) inputs unless overridden."""
        import torch.nn.functional as F

        return F.cross_entropy(logits_adv, y, label_smoothing=label_smoothing)


#: every training method, by name: built-ins first, then the ``harden.methods`` entry points
METHODS: Registry[TrainingMethod] = Registry("training method", entry_points="harden.methods")


def register_method(method: TrainingMethod, *, replace: bool = False) -> TrainingMethod:
    """Register ``method`` under ``method.name`` (``--method NAME`` then uses it everywhere)."""
    if not isinstance(method, TrainingMethod):
        raise TypeError("register_method() takes a TrainingMethod instance")
    return METHODS.register(method.name, method, replace=replace)


def get_method(name: str) -> TrainingMethod:
    """The method named ``name``, or a one-line UsageError with close matches."""
    return METHODS.get(name)


def method_names() -> list[str]:
    """The names ``--method`` accepts."""
    return METHODS.names()

