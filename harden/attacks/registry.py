"""The attacks harden knows by name: one :class:`Attack` object each, used by evaluation, training
recipes and the command line (``harden list``, ``harden evaluate --attack``).

An attack says what it is (name, one-line description), which settings it takes (steps, step size),
the stages an evaluation runs for it, how to run a stage on a batch, and how a report names its
result. Plugins add their own with :func:`register_attack` or the ``harden.attacks`` entry-point group.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from harden.attacks.gradient import fgsm, pgd
from harden.registry import Registry

if TYPE_CHECKING:
    from harden.evaluation.report_types import EvaluationReport

DEFAULT_STEPS = 20
STANDARD_STAGES = ("apgd-ce", "apgd-t", "fab-t", "square")
FAST_STAGES = ("apgd-ce", "apgd-t")
RAND_STAGES = ("apgd-ce", "apgd-dlr")  # AutoAttack's version for randomized defenses (EOT over 20 draws)
AUTOATTACK_NORMS = ("Linf", "L2", "L1")  # pyautoattack's threat models; harden's own attacks take Linf and L2
# apgd-t-cw: APGD-T on the targeted CW margin, standing in for APGD-T with fewer than 4 classes
AUTOATTACK_STAGES = frozenset({"apgd-ce", "apgd-dlr", "apgd-t", "apgd-t-cw", "fab", "fab-t", "square"})

# runs one stage on a batch: (model, x, y, eps=, norm=, steps=, step_size=, generator=) -> adversarial x
BatchRunner = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class Attack:
    """One attack: its name, what it does, the settings it takes, and how it runs and is reported.

    ``run`` attacks one batch (for the attacks harden runs itself); attacks whose stages are
    AutoAttack's (:data:`AUTOATTACK_STAGES`) run through ``pyautoattack`` instead.
    """

    name: str
    description: str
    takes_steps: bool = False
    takes_step_size: bool = False
    default_steps: int | None = None
    run: BatchRunner | None = None
    strength_steps: int = 5          # steps of the PGD run that checks this attack's strength
    beats_pgd5: bool = False         # many-step attack on CE: it must do at least as well as PGD-5
    norms: tuple[str, ...] = ("Linf", "L2")  # the threat models it attacks

    def stages(self, *, fast: bool = False, steps: int | None = None) -> tuple[str, ...]:
        """The attack sequence an evaluation runs."""
        if self.takes_steps:
            return (f"{self.name}-{steps or self.default_steps}",)
        return (self.name,)

    def version(self, fast: bool) -> str | None:
        """The variant recorded in a report (AutoAttack's ``standard`` or ``fast``), if any."""
        return None

    def label(self, report: EvaluationReport) -> str:
        """How a summary names this attack's result (``PGD-20``, ``APGD-CE``, ``AutoAttack (fast)``) in ``report``."""
        if self.takes_steps:
            stages = report.attacks or [self.name]
            return str(stages[-1]).upper()
        return self.name.upper()


@dataclass(frozen=True)
class AutoAttackSuite(Attack):
    """AutoAttack's standard sequence (or its fast prefix), run through ``pyautoattack``."""

    def stages(self, *, fast: bool = False, steps: int | None = None) -> tuple[str, ...]:
        return FAST_STAGES if fast else STANDARD_STAGES

    def version(self, fast: bool) -> str | None:
        return "fast" if fast else "standard"

    def label(self, report: EvaluationReport) -> str:
        return "AutoAttack" + (" (fast)" if report.version == "fast" else "")


def _run_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str, steps: int | None,
             step_size: float | None, generator: torch.Generator | None) -> torch.Tensor:
    return pgd(model, x, y, eps=eps, steps=steps or DEFAULT_STEPS, step_size=step_size, norm=norm, loss="ce",
               generator=generator)


def _run_cw(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str, steps: int | None,
            step_size: float | None, generator: torch.Generator | None) -> torch.Tensor:
    return pgd(model, x, y, eps=eps, steps=steps or DEFAULT_STEPS, step_size=step_size, norm=norm, loss="cw",
               generator=generator)


def _run_fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str, steps: int | None,
              step_size: float | None, generator: torch.Generator | None) -> torch.Tensor:
    return fgsm(model, x, y, eps=eps, norm=norm, step_size=step_size, generator=generator)


#: every attack by name: harden's own, then the ``harden.attacks`` entry points (each names an
#: :class:`Attack`), then those registered at run time
ATTACKS: Registry[Attack] = Registry("attack", entry_points="harden.attacks")


def register_attack(attack: Attack) -> Attack:
    """Add ``attack`` to the attacks ``harden evaluate --attack`` and recipes accept (a plugin's hook)."""
    return ATTACKS.register(attack.name, attack)


def get_attack(name: str) -> Attack | None:
    """The registered attack called ``name`` (lower case), or None."""
    return ATTACKS.items().get(name)


def registered_attacks() -> dict[str, Attack]:
    """Every registered attack by name, in registration order."""
    return ATTACKS.items()


def list_attacks() -> dict[str, str]:
    """Attack names accepted by ``harden evaluate --attack``, with a one-line description each."""
    return {name: attack.description for name, attack in ATTACKS.items().items()}


def takes_steps(name: str) -> bool:
    """Whether the attack called ``name`` takes a number of steps (False for unknown names)."""
    attack = get_attack(name)
    return attack is not None and attack.takes_steps


def attack_label(report: EvaluationReport | Mapping[str, Any]) -> str:
    """How a summary names the attack of an evaluation report, or of its JSON (``PGD-20``, ``AutoAttack (fast)``)."""
    from harden.evaluation.report_types import EvaluationReport  # harden.evaluation imports the attacks

    report = EvaluationReport.of(report)
    attack = get_attack(report.attack)
    return attack.label(report) if attack is not None else report.attack.upper()


register_attack(AutoAttackSuite(
    "autoattack", "AutoAttack standard (pyautoattack): APGD-CE, APGD-T, FAB-T, Square; --fast: APGD-CE, APGD-T; "
    "--version rand: APGD-CE, APGD-DLR with EOT", beats_pgd5=True, norms=AUTOATTACK_NORMS))
register_attack(Attack("apgd-ce", "APGD on cross-entropy alone, with AutoAttack's standard settings (pyautoattack)",
                       beats_pgd5=True, norms=AUTOATTACK_NORMS))
register_attack(Attack("pgd", "PGD-20 on cross-entropy, step eps/4, random start (quick check)", takes_steps=True,
                       takes_step_size=True, default_steps=DEFAULT_STEPS, run=_run_pgd))
register_attack(Attack("fgsm", "one gradient-sign step of size eps (quick check, weak)", takes_step_size=True,
                       run=_run_fgsm, strength_steps=1))
register_attack(Attack("cw", "PGD-20 on the Carlini-Wagner margin loss, step eps/4 (quick check)", takes_steps=True,
                       takes_step_size=True, default_steps=DEFAULT_STEPS, run=_run_cw))
