"""Where base networks come from, and how harden builds them.

:mod:`~harden.sources.registry` holds the registry (:class:`ModelSource`, :class:`BuiltNet`, ``SOURCES``);
:mod:`~harden.sources.library` the ``timm:``, ``tv:`` and user-factory sources; :mod:`~harden.sources.zoo`
the ``cifar:`` and ``robustbench:`` sources and their networks; :mod:`~harden.sources.loading` model
specs, :func:`load_model` and weights files. Importing the package registers harden's own sources.
"""

from harden.sources import library, zoo  # noqa: F401  (importing them registers harden's own sources)
from harden.sources.loading import (
    build_net,
    load_model,
    load_weights_into,
    model_sources,
    parse_spec,
    read_state_dict,
)
from harden.sources.registry import SOURCES, BuiltNet, ModelSource, register_model_source

__all__ = ["SOURCES", "BuiltNet", "ModelSource", "build_net", "load_model", "load_weights_into", "model_sources",
           "parse_spec", "read_state_dict", "register_model_source"]
