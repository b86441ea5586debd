"""One kind of registry for harden's extension points: a name -> item table, open to third-party entry points.

>>> METHODS = Registry("training method", entry_points="harden.methods")   # doctest: +SKIP
>>> METHODS.register("my-method", MyMethod())                              # doctest: +SKIP
>>> METHODS.get("my-methd")                                                # doctest: +SKIP
UsageError: unknown training method 'my-methd'; did you mean: my-method?

Entry points of the group are loaded the first time the registry is read; each names an object to
register, or a module whose import registers it. One that fails to load is skipped with a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Generic, TypeVar

from harden.errors import HardenWarning, UsageError, close_matches

T = TypeVar("T")


class Registry(Generic[T]):
    """Items of one kind by name, in registration order (built-ins first, then plugins)."""

    def __init__(self, kind: str, *, entry_points: str | None = None) -> None:
        self.kind = kind
        self.group = entry_points
        self._items: dict[str, T] = {}
        self._plugins_loaded = entry_points is None

    def register(self, name: str, item: T, *, replace: bool = False) -> T:
        """Add ``item`` under ``name``; a second item of the same name needs ``replace=True``."""
        if not name or name != name.strip():
            raise ValueError(f"a {self.kind} needs a name without surrounding spaces, got {name!r}")
        if name in self._items and not replace and self._items[name] is not item:
            raise ValueError(f"a {self.kind} named '{name}' is already registered (pass replace=True)")
        self._items[name] = item
        return item

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
        from importlib.metadata import entry_points

        for ep in entry_points(group=self.group or ""):
            try:
                obj = ep.load()
            except Exception as exc:  # a broken plugin must not break harden
                warnings.warn(f"harden: {self.kind} plugin '{ep.name}' ({ep.value}) failed to load: {exc}",
                              HardenWarning, stacklevel=3)
                continue
            if not isinstance(obj, type(warnings)):  # an object to register (a module registered itself)
                self._items.setdefault(ep.name, obj)
