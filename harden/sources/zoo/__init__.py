"""The model zoo: the ``cifar:`` source (:mod:`harden.sources.zoo.cifar_source`, CIFAR-form networks of the
adversarial-robustness literature) and the ``robustbench:`` source (:mod:`harden.sources.zoo.robustbench`).

Importing the package registers both.
"""

from harden.sources.zoo import cifar_source, robustbench
from harden.sources.zoo.cifar_source import SOURCE, build, names

__all__ = ["SOURCE", "build", "cifar_source", "names", "robustbench"]
