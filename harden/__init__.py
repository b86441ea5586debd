"""harden: make existing image classifiers more robust to adversarial examples.

Library API::

    import harden
    model = harden.load_model("resnet18", num_classes=10, input_size=32)
    model = harden.apply(model, ["upsample:factor=2", "stride-mod"])
    harden.save(model, "resnet18-rcm.safetensors")
    same = harden.load("resnet18-rcm.safetensors")

The names below are imported on first use (PEP 562), so ``import harden`` and the ``harden --help``
command line start without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from harden._version import __version__ as __version__

# public name -> the module that defines it
_EXPORTS = {
    "HardenError": "harden.errors",
    "UsageError": "harden.errors",
    "ImageDataset": "harden.data",
    "as_image_dataset": "harden.data",
    "image_dataset": "harden.data",
    "evaluate": "harden.evaluation",
    "EvaluationReport": "harden.evaluation",
    "HardenedModel": "harden.model",
    "apply": "harden.pipeline",
    "provenance_of": "harden.pipeline",
    "recipe": "harden.pipeline",  # deprecated: provenance_of
    "wrap": "harden.pipeline",
    "Provenance": "harden.provenance",
    "search": "harden.searching",
    "load": "harden.serialization",
    "save": "harden.serialization",
    "load_model": "harden.sources",
    "finetune": "harden.training",
    "Applied": "harden.transforms",
    "Param": "harden.transforms",
    "Transform": "harden.transforms",
    "list_transforms": "harden.transforms",
    "register_transform": "harden.transforms",
}

__all__ = [
    "Applied",
    "EvaluationReport",
    "HardenError",
    "HardenedModel",
    "ImageDataset",
    "Param",
    "Provenance",
    "Transform",
    "UsageError",
    "apply",
    "as_image_dataset",
    "evaluate",
    "finetune",
    "image_dataset",
    "list_transforms",
    "load",
    "load_model",
    "provenance_of",
    "recipe",
    "register_transform",
    "save",
    "search",
    "wrap",
]


def __getattr__(name: str) -> Any:
    """Import a public name, or a submodule (``harden.transforms``), when it is first used."""
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value
    if not name.startswith("__"):
        try:
            return importlib.import_module(f"harden.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"harden.{name}":
                raise
    raise AttributeError(f"module 'harden' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # what type checkers and IDEs see
    from harden.data import ImageDataset, as_image_dataset, image_dataset
    from harden.errors import HardenError, UsageError
    from harden.evaluation import EvaluationReport, evaluate
    from harden.model import HardenedModel
    from harden.pipeline import apply, provenance_of, recipe, wrap
    from harden.provenance import Provenance
    from harden.searching import search
    from harden.serialization import load, save
    from harden.sources import load_model
    from harden.training import finetune
    from harden.transforms import Applied, Param, Transform, list_transforms, register_transform
