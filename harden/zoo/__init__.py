"""The ``cifar:`` model source: CIFAR-form networks of the adversarial-robustness literature.

``cifar:resnet18``, ``cifar:resnet34``, ``cifar:preactresnet18``, ``cifar:wrn-DEPTH-WIDEN`` (any
``6n+4`` depth, e.g. ``wrn-28-10``, ``wrn-34-10``, ``wrn-16-1``), ``cifar:vgg16_bn`` (and the other
VGGs), ``cifar:alexnet``, the RobustResNets ``cifar:robustresnet-a1`` .. ``a4``, their basic-block
twins ``cifar:wrn-a1`` .. ``a4`` and ``cifar:robustresnet-custom`` (``depths``/``widths`` keyword
arguments, as ``harden scale --build`` writes them). Defaults: 10 classes, 3x32x32 inputs, the
CIFAR-10 mean and std.

Importing the package registers the ``cifar:`` source, then ``robustbench:`` (RobustBench's
leaderboard entries, built from these networks and those of ``rb_archs``).
"""

from harden import library_sources  # noqa: F401  (timm:, tv: and import: register before the zoo's sources)
from harden.zoo import cifar_source, robustbench
from harden.zoo.cifar_source import SOURCE, build, names

__all__ = ["SOURCE", "build", "cifar_source", "names", "robustbench"]
