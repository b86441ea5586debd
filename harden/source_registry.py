"""The registry of model sources: what a source builds (:class:`BuiltNet`), what a source is, and which exist.

Sources register themselves when their module is imported (the library ones in
:mod:`harden.library_sources`, the zoo's in :mod:`harden.zoo`); :mod:`harden.sources` imports them all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class BuiltNet:
    """A freshly built base network and the defaults its source knows for it."""

    net: nn.Module
    input_size: tuple[int, int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: rewrites a checkpoint's state dict for this network (drops what it holds besides it), or None
    adapt_state: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None


@dataclass(frozen=True)
class ModelSource:
    """A named place models come from.

    ``build(name, num_classes, pretrained, kwargs)`` returns a :class:`BuiltNet`; ``names()`` lists
    the names it knows (for ``harden list`` and close-match hints).
    """

    name: str
    description: str
    build: Callable[[str, int | None, bool, dict[str, Any]], BuiltNet]
    names: Callable[[], Sequence[str]]
    runs_user_code: bool = False

    def has(self, model_name: str) -> bool:
        return model_name in set(self.names())


_SOURCES: dict[str, ModelSource] = {}


def register_model_source(source: ModelSource) -> ModelSource:
    """Register a model source under ``source.name`` (used as the ``NAME:`` prefix of specs)."""
    _SOURCES[source.name] = source
    return source


def registered_sources() -> dict[str, ModelSource]:
    """The sources registered so far, by prefix, in registration order."""
    return dict(_SOURCES)
