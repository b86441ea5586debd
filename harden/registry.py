"""One kind of registry for harden's extension points: a name -> item table, open to third-party entry points.

>>> METHODS = Registry("training method", entry_points="harden.methods")   # doctest: +SKIP
>>> METHODS.register("my-method", MyMethod())                              # doctest: +SKIP
>>> METHODS.get("my-methd")                                                # doctest: +SKIP
UsageError: unknown training method 'my-methd'; did you mean: my-method?

Entry points of the group are loaded the first time the registry is read; each names an object to
register, or a module whose import registers it. One that fails to load is skipped with a warning.
Every extension point uses one: transforms (:data:`harden.transforms.TRANSFORMS`), attacks
(:data:`harden.attacks.ATTACKS`), model sources (:data:`harden.sources.SOURCES`) and training methods
(:data:`harden.methods.METHODS`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from harden.errors import HardenWarning, UsageError, close_matches

T = TypeVar("T")


class Registry(Generic[T]):
    """Items of one kind by name, in registration order (built-ins first, then plugins)."""

    def __init__(self, kind: str, *, entry_points: str | None = None,
                 adopt: Callable[[Any, Any], T] | None = None) -> None:
        """``adopt(entry_point, loaded_object)`` turns a plugin's object into an item (e.g. records its
        distribution); the item is registered under the entry point's name unless already there."""
        self.kind = kind
        self.group = entry_points
        self._adopt = adopt
        self._items: dict[str, T] = {}
        self._plugins_loaded = entry_points is None
        self._builtins: frozenset[str] = frozenset()

    def register(self, name: str, item: T, *, replace: bool = False) -> T:
        """Add ``item`` under ``name``; a second item of the same name needs ``replace=True``."""
        if not name or name != name.strip():
            raise ValueError(f"a {self.kind} needs a name without surrounding spaces, got {name!r}")
        if name in self._items and not replace and self._items[name] is not item:
            raise ValueError(f"a {self.kind} named '{name}' is already registered (pass replace=True)")
        self._items[name] = item
        return item

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a no-op when it is not registered)."""
        self._items.pop(name, None)

    @contextmanager
    def scoped(self, *, reload_plugins: bool = False) -> Iterator[Registry[T]]:
        """Undo on exit every registration made inside the block (tests, notebooks). With
        ``reload_plugins`` the block starts from the built-ins and reads the entry points again (after
        installing a distribution)."""
        self._load_plugins()
        saved, loaded = dict(self._items), self._plugins_loaded
        if reload_plugins and self.group is not None:
            self._items = {k: v for k, v in self._items.items() if k in self._builtins}
            self._plugins_loaded = self.group is None
        try:
            yield self
        finally:
            self._items, self._plugins_loaded = saved, loaded

    def items(self) -> dict[str, T]:
        """Every registered item by name, built-ins first."""
        self._load_plugins()
        return dict(self._items)

    def get(self, name: str) -> T:
        """The item named ``name``, or a one-line :class:`UsageError` with the closest names."""
        self._load_plugins()
        if name not in self._items:
            raise UsageError(self.get_error(name))
        return self._items[name]

    def get_error(self, name: str) -> str:
        """The one-line message for an unknown ``name``: the closest names, then all of them."""
        return (f"unknown {self.kind} '{name}'{close_matches(name, self._items)} "
                f"(known: {', '.join(self._items)})")

    def names(self) -> list[str]:
        """Every registered name, built-ins first."""
        self._load_plugins()
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._items

    def __iter__(self) -> Iterator[T]:
        self._load_plugins()
        return iter(list(self._items.values()))

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        self._builtins = frozenset(self._items)
        from importlib.metadata import entry_points

        for ep in entry_points(group=self.group or ""):
            if ep.name in self._items:
                continue
            try:
                obj = ep.load()
                if isinstance(obj, type(warnings)):  # a module: importing it registered what it holds
                    continue
                self._items.setdefault(ep.name, self._adopt(ep, obj) if self._adopt else obj)
            except Exception as exc:  # a broken plugin must not break harden
                warnings.warn(f"harden: {self.kind} plugin '{ep.name}' ({ep.value}) failed to load: {exc}",
                              HardenWarning, stacklevel=3)
