"""The model zoo: the ``cifar:`` source (:mod:`harden.zoo.cifar_source`, CIFAR-form networks of the
adversarial-robustness literature) and the ``robustbench:`` source (:mod:`harden.zoo.robustbench`).

Importing the package registers both, after the library sources (``timm:``, ``tv:``, ``import:``).
"""

from harden import library_sources  # noqa: F401  (timm:, tv: and import: register before the zoo's sources)
from harden.zoo import cifar_source, robustbench
from harden.zoo.cifar_source import SOURCE, build, names

__all__ = ["SOURCE", "build", "cifar_source", "names", "robustbench"]
