"""What an evaluation runs: an attack request checked against the attack registry and expanded into
an :class:`AttackPlan` (the sequence of attack stages and their settings)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harden.attacks import (
    AUTOATTACK_STAGES,
    DEFAULT_STEPS,
    FAST_STAGES,
    NORMS,
    STANDARD_STAGES,
    Attack,
    get_attack,
    list_attacks,
    registered_attacks,
)
from harden.errors import UsageError, close_matches
from harden.evaluation.eps import parse_eps

STANDARD_ATTACKS = STANDARD_STAGES
FAST_ATTACKS = FAST_STAGES
__all__ = ["AUTOATTACK_STAGES", "DEFAULT_STEPS", "FAST_ATTACKS", "STANDARD_ATTACKS", "AttackPlan", "plan_attack"]


@dataclass(frozen=True)
class AttackPlan:
    """What to run: the attack sequence (``stages``) and its settings."""

    attack: str
    stages: tuple[str, ...]
    eps: float
    eps_text: str
    norm: str
    seed: int
    version: str | None = None
    steps: int | None = None
    step_size: float | None = None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"attack": self.attack, "attacks": list(self.stages)}
        if self.version:
            out["version"] = self.version
        if self.steps is not None:
            out["steps"] = self.steps
            out["step_size"] = self.step_size if self.step_size is not None else self.eps / 4
        return out

    @property
    def uses_autoattack(self) -> bool:
        """Whether any stage runs through ``pyautoattack``."""
        return any(s in AUTOATTACK_STAGES for s in self.stages)

    @property
    def is_full_autoattack(self) -> bool:
        """Whether this is AutoAttack's standard sequence (the one RobustBench reports)."""
        return self.attack == "autoattack" and self.version == "standard"


def _names_that(test: Callable[[Attack], bool]) -> str:
    """``pgd, cw or fgsm``: the registered attacks passing ``test``, those taking steps first."""
    names = [a.name for a in sorted(registered_attacks().values(), key=lambda a: not a.takes_steps) if test(a)]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _check_request(spec: Attack, *, fast: bool, steps: int | None, step_size: float | None) -> None:
    if fast and spec.version(True) is None:
        raise UsageError(f"--fast applies to --attack {_names_that(lambda a: a.version(True) is not None)} only")
    if steps is not None and (not spec.takes_steps or steps <= 0):
        raise UsageError("--steps takes a positive number and applies to --attack "
                         f"{_names_that(lambda a: a.takes_steps)}")
    if step_size is not None and (not spec.takes_step_size or step_size <= 0):
        raise UsageError("--step-size takes a positive number and applies to --attack "
                         f"{_names_that(lambda a: a.takes_step_size)}")


def plan_attack(attack: str = "autoattack", *, eps: str | float = 8 / 255, norm: str = "Linf", fast: bool = False,
                seed: int = 0, steps: int | None = None, step_size: float | None = None) -> AttackPlan:
    """Validate an attack request and expand it into an :class:`AttackPlan`."""
    attack = attack.strip().lower()
    spec = get_attack(attack)
    if spec is None:
        known = list_attacks()
        raise UsageError(f"unknown attack '{attack}'{close_matches(attack, known)} (known: {', '.join(known)})")
    if norm not in NORMS:
        raise UsageError(f"unknown norm '{norm}'{close_matches(norm, NORMS)} (use Linf or L2)")
    value, text = parse_eps(eps, norm=norm)
    _check_request(spec, fast=fast, steps=steps, step_size=step_size)
    return AttackPlan(attack, spec.stages(fast=fast, steps=steps), value, text, norm, seed, version=spec.version(fast),
                      steps=(steps or spec.default_steps or DEFAULT_STEPS) if spec.takes_steps else None,
                      step_size=step_size if spec.takes_step_size else None)
