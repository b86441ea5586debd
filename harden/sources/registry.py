"""The registry of model sources: what a source builds (:class:`BuiltNet`), what a source is, and which exist.

harden's sources register themselves when their module is imported (the library ones in
:mod:`harden.sources.library`, the zoo's in :mod:`harden.sources.zoo`; :mod:`harden.sources` imports them
all); third-party ones come from the ``harden.sources`` entry-point group. A bare model name (no
``SOURCE:`` prefix) is looked up in the sources by their ``bare_rank``, lowest first, whatever the order
they registered in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from harden.provenance import TransformEntry
from harden.registry import Registry


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
    #: transforms the source applies on top of ``net`` as part of the model it names (``from_source``
    #: entries: :func:`harden.load_model` replays them before loading the checkpoint and records them)
    transforms: tuple[TransformEntry, ...] = ()


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
    #: where a bare model name is looked up: lower first (timm 0, torchvision 1), None: only with the prefix
    bare_rank: int | None = 10

    def has(self, model_name: str) -> bool:
        return model_name in set(self.names())


#: every model source by prefix: harden's own, then the ``harden.sources`` entry points (each names a
#: :class:`ModelSource`), then those registered at run time
SOURCES: Registry[ModelSource] = Registry("model source", entry_points="harden.sources")


def register_model_source(source: ModelSource) -> ModelSource:
    """Register a model source under ``source.name`` (used as the ``NAME:`` prefix of specs)."""
    return SOURCES.register(source.name, source, replace=True)


def registered_sources() -> dict[str, ModelSource]:
    """The registered sources, by prefix, in registration order."""
    return SOURCES.items()


def bare_name_order() -> list[ModelSource]:
    """The sources a bare model name is looked up in, in order (see :attr:`ModelSource.bare_rank`)."""
    ranked = [s for s in SOURCES.items().values() if s.bare_rank is not None]
    return sorted(ranked, key=lambda s: s.bare_rank if s.bare_rank is not None else 0)
