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
    ``searchable``: fit for ``harden search``, which ranks trials by robust accuracy. ``inner_loss`` and
    ``inner_start``: the training attack's loss (``ce`` or ``kl``) and start (``uniform`` or ``gaussian``),
    for methods that keep the default :meth:`perturb` (PGD on the attack core).
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
    inner_loss: str = "ce"
    inner_start: str = "uniform"

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
        """The adversarial examples of a training batch (the model's mode is the caller's): ``steps`` PGD steps
        of ``step`` on :attr:`inner_loss` from :attr:`inner_start`; the clean batch for clean training."""
        if not self.attacks:
            return x.detach()
        from harden.training.inner_attack import perturb

        return perturb(model, x, y, eps=eps, step=step, steps=steps, norm=norm, generator=generator,
                       loss=self.inner_loss, start=self.inner_start)

    def recorded_settings(self, options: dict[str, Any]) -> dict[str, Any]:
        """Settings of the method's own that a model file records (from the run's method options)."""
        return {}

    def loss(self, logits_adv: torch.Tensor, y: torch.Tensor, *, logits_nat: torch.Tensor | None, beta: float,
             label_smoothing: float) -> torch.Tensor:
        """The training loss of a batch: cross-entropy on the (attacked) inputs unless overridden."""
        import torch.nn.functional as F

        from harden.attacks import check_logits

        check_logits(logits_adv)
        return F.cross_entropy(logits_adv, y, label_smoothing=label_smoothing)


def _adopt(entry_point: Any, obj: Any) -> TrainingMethod:
    """A method found through an entry point: a :class:`TrainingMethod` instance, or a subclass (instantiated)."""
    method = obj() if isinstance(obj, type) and issubclass(obj, TrainingMethod) else obj
    if not isinstance(method, TrainingMethod) or method.name != entry_point.name:
        raise TypeError(f"{entry_point.value} is not a TrainingMethod named '{entry_point.name}'")
    return method


#: every training method, by name: built-ins first, then the ``harden.methods`` entry points
METHODS: Registry[TrainingMethod] = Registry("training method", entry_points="harden.methods", adopt=_adopt)


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

