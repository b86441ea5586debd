"""Training methods: what one adversarial training step attacks with and which loss it minimises.

Every method is a :class:`TrainingMethod` in the :data:`METHODS` registry, so that the command line's
``--method`` choices, recipes, ``harden search``'s space and the trainer all read it from one place.
Adding a method is one file: a subclass registered with :func:`register_method` (or through the
``harden.methods`` entry point group of a third-party package)::

    from harden.methods import TrainingMethod, register_method

    class FreeLunch(TrainingMethod):
        name, label = "free-lunch", "FGSM from zero (no random start)"
        fixed_steps = 1

        def perturb(self, model, x, y, *, eps, step, steps, norm, generator, options):
            from harden.attacks import pgd_core
            return pgd_core(model, x, y, eps=eps, steps=1, step=step, norm=norm, start="zero")

    register_method(FreeLunch())

No torch at import: the command line reads the names for ``--help``; a method imports torch inside
its ``perturb`` and ``loss``.
"""

from __future__ import annotations

from harden.methods import builtin, n_fgsm  # noqa: F401  (registers the built-in methods, in this order)
from harden.methods.base import METHODS, TrainingMethod, get_method, method_names, register_method

__all__ = ["METHODS", "TrainingMethod", "get_method", "method_names", "register_method"]
