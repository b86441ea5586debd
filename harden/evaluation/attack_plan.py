"""What an evaluation runs: an attack request checked against the attack registry and expanded into
an :class:`AttackPlan` (the sequence of attack stages and their settings)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from harden.attacks import (
    AUTOATTACK_NORMS,
    AUTOATTACK_STAGES,
    DEFAULT_STEPS,
    NORMS,
    ONE_LOGIT,
    RAND_STAGES,
    Attack,
    get_attack,
    list_attacks,
    registered_attacks,
)
from harden.errors import UsageError, close_matches
from harden.evaluation.eps import parse_eps

AA_TARGETS = 9  # AutoAttack standard: 9 target classes for APGD-T and FAB-T
TARGETED_DLR_CLASSES = 4  # APGD-T's targeted DLR loss reads the 4th largest logit
__all__ = ["AA_TARGETS", "AUTOATTACK_STAGES", "DEFAULT_STEPS", "AttackPlan", "plan_attack", "plan_for_classes"]


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
    classes: int | None = None       # the model's logits, once known (:func:`plan_for_classes`)
    targets: int | None = None       # target classes of APGD-T and FAB-T, when they run
    deviations: tuple[str, ...] = ()  # how this run differs from AutoAttack's standard suite

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"attack": self.attack, "attacks": list(self.stages)}
        if self.version:
            out["version"] = self.version
        if self.steps is not None:
            out["steps"] = self.steps
            out["step_size"] = self.step_size if self.step_size is not None else self.eps / 4
        if self.classes is not None:
            out["classes"] = self.classes
        if self.targets is not None:
            out["target_classes"] = self.targets
        if self.deviations:
            out["deviations"] = list(self.deviations)
        return out

    @property
    def uses_autoattack(self) -> bool:
        """Whether any stage runs through ``pyautoattack``."""
        return any(s in AUTOATTACK_STAGES for s in self.stages)

    @property
    def is_full_autoattack(self) -> bool:
        """Whether this is AutoAttack's standard sequence (the one RobustBench reports); with 4 to 9 classes
        it targets every other class, with fewer its APGD-T loss is replaced and it no longer counts."""
        return self.attack == "autoattack" and self.version == "standard" and "apgd-t-cw" not in self.stages


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


def plan_attack(attack: str, *, eps: str | float, norm: str = "Linf", fast: bool = False,
                seed: int = 0, steps: int | None = None, step_size: float | None = None,
                version: str = "standard") -> AttackPlan:
    """Validate an attack request and expand it into an :class:`AttackPlan`. ``version`` ``rand`` is
    AutoAttack's version for randomized defenses (APGD-CE and APGD-DLR, gradients averaged over 20 draws)."""
    attack = attack.strip().lower()
    spec = get_attack(attack)
    if spec is None:
        known = list_attacks()
        raise UsageError(f"unknown attack '{attack}'{close_matches(attack, known)} (known: {', '.join(known)})")
    known_norms = tuple(dict.fromkeys((*NORMS, *AUTOATTACK_NORMS)))
    if norm not in known_norms:
        raise UsageError(f"unknown norm '{norm}'{close_matches(norm, known_norms)} (use {', '.join(known_norms)})")
    if norm not in spec.norms:
        raise UsageError(f"--attack {attack} takes --norm {' or '.join(spec.norms)}; {norm} is attacked by "
                         f"{_names_that(lambda a: norm in a.norms)}")
    value, text = parse_eps(eps, norm=norm)
    _check_request(spec, fast=fast, steps=steps, step_size=step_size)
    if version == "rand":
        _check_rand(spec, fast)
        return AttackPlan(attack, RAND_STAGES, value, text, norm, seed, version="rand")
    if version != "standard":
        raise UsageError(f"--version takes standard or rand, got '{version}'")
    return AttackPlan(attack, spec.stages(fast=fast, steps=steps), value, text, norm, seed, version=spec.version(fast),
                      steps=(steps or spec.default_steps or DEFAULT_STEPS) if spec.takes_steps else None,
                      step_size=step_size if spec.takes_step_size else None)


def _check_rand(spec: Attack, fast: bool) -> None:
    if spec.name != "autoattack":
        raise UsageError(f"--version rand applies to --attack autoattack, not {spec.name}")
    if fast:
        raise UsageError("--fast and --version rand are two versions of AutoAttack; choose one")


def _deviations(classes: int, targets: int, stages: tuple[str, ...]) -> list[str]:
    """What a ``classes``-class model changes in AutoAttack's stages ``stages`` (after the substitution)."""
    targeted = [s.upper().removesuffix("-CW") for s in stages if s in ("apgd-t", "apgd-t-cw", "fab-t")]
    out = []
    if targets < AA_TARGETS and targeted:
        out.append(f"{classes} classes: {' and '.join(targeted)} target the {targets} other "
                   f"class{'es' if targets > 1 else ''} (standard: {AA_TARGETS})")
    if "apgd-t-cw" in stages:
        out.append(f"APGD-T's targeted DLR loss needs {TARGETED_DLR_CLASSES} classes: stage apgd-t-cw is APGD-T on "
                   "the targeted CW margin (target logit minus true logit); not the standard suite, no autoattack_acc")
    return out


def plan_for_classes(plan: AttackPlan, classes: int) -> AttackPlan:
    """``plan`` for a model with ``classes`` logits: AutoAttack's targeted attacks aim at ``min(9, classes - 1)``
    classes, and below 4 classes APGD-T's DLR loss gives way to the CW margin (stage ``apgd-t-cw``)."""
    if classes < 2:
        raise UsageError(ONE_LOGIT)
    if not any(s in ("apgd-t", "fab-t") for s in plan.stages):
        return replace(plan, classes=classes)
    targets = min(AA_TARGETS, classes - 1)
    stages = plan.stages
    if classes < TARGETED_DLR_CLASSES:
        stages = tuple("apgd-t-cw" if s == "apgd-t" else s for s in stages)
    return replace(plan, stages=stages, classes=classes, targets=targets,
                   deviations=tuple(_deviations(classes, targets, stages)))
