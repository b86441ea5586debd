"""White-box attacks (:mod:`harden.attacks.gradient`) and the registry of attacks harden knows by
name (:mod:`harden.attacks.registry`)."""

from harden.attacks.gradient import (
    LOSSES,
    NORMS,
    ONE_LOGIT,
    STARTS,
    check_logits,
    cw,
    fgsm,
    l2_normalize,
    margin_loss,
    pgd,
    pgd_core,
    project,
)
from harden.attacks.registry import (
    ATTACKS,
    AUTOATTACK_NORMS,
    AUTOATTACK_STAGES,
    DEFAULT_STEPS,
    FAST_STAGES,
    RAND_STAGES,
    STANDARD_STAGES,
    Attack,
    AutoAttackSuite,
    attack_label,
    get_attack,
    list_attacks,
    register_attack,
    registered_attacks,
    takes_steps,
)

__all__ = [
    "ATTACKS", "AUTOATTACK_NORMS", "AUTOATTACK_STAGES", "DEFAULT_STEPS", "FAST_STAGES", "LOSSES", "NORMS", "ONE_LOGIT",
    "RAND_STAGES", "STANDARD_STAGES",
    "STARTS", "Attack", "AutoAttackSuite", "attack_label", "check_logits", "cw", "fgsm", "get_attack", "l2_normalize",
    "list_attacks", "margin_loss", "pgd", "pgd_core", "project", "register_attack", "registered_attacks",
    "takes_steps",
]
