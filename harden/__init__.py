"""harden: make existing image classifiers more robust to adversarial examples.

Library API::

    import harden
    model = harden.load_model("resnet18", num_classes=10, input_size=32)
    model = harden.apply(model, ["upsample:factor=2", "stride-mod"])
    harden.save(model, "resnet18-rcm.safetensors")
    same = harden.load("resnet18-rcm.safetensors")
"""

__version__ = "0.1.0"

from harden.errors import HardenError, UsageError  # noqa: E402
from harden.evaluation import evaluate  # noqa: E402
from harden.model import HardenedModel  # noqa: E402
from harden.pipeline import apply, recipe, wrap  # noqa: E402
from harden.searching import search  # noqa: E402
from harden.serialization import load, save  # noqa: E402
from harden.sources import load_model  # noqa: E402
from harden.training import finetune  # noqa: E402
from harden.transforms import Applied, Param, Transform, list_transforms, register_transform  # noqa: E402

__all__ = [
    "Applied",
    "HardenError",
    "HardenedModel",
    "Param",
    "Transform",
    "UsageError",
    "apply",
    "evaluate",
    "finetune",
    "list_transforms",
    "load",
    "load_model",
    "recipe",
    "register_transform",
    "save",
    "search",
    "wrap",
]
