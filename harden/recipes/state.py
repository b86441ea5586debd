"""The resume state of ``harden run``: which stages finished, in ``OUT/run-state.json`` on the run layer's Store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harden.errors import UsageError
from harden.runtime.store import Store, as_json, differences


class RunState:
    """Which stages of a ``harden run`` have finished, kept in ``OUT/run-state.json``.

    A fresh run starts an empty state; ``resume=True`` reads it back, refuses a folder that holds a
    run of a different recipe, and lets finished stages be skipped. Stages are marked only after
    their outputs are written, so a stage listed here is complete.
    """

    FILE = "run-state.json"

    def __init__(self, out: Path, values: dict[str, Any], *, resume: bool, writer: bool) -> None:
        self.path = out / self.FILE
        self.store = Store(self.path, indent=2,
                           unreadable="'{path}' is damaged ({reason}); run without --resume to start over")
        self.values = as_json(values)
        self.writer = writer
        self.done: dict[str, dict[str, Any]] = {}
        if resume:
            if not self.path.is_file():
                raise UsageError(f"nothing to resume in '{out}': it holds no {self.FILE} from an earlier "
                                 "`harden run`; run without --resume")
            saved = self.store.load()
            try:
                old, done = saved["recipe"], dict(saved["done"])  # type: ignore[index]
            except (ValueError, KeyError, TypeError) as exc:
                raise self.store.damaged(exc) from None
            diffs = [key or "(the whole recipe)" for key, _, _ in differences(old, self.values)]
            if diffs:
                raise UsageError(f"'{out}' holds a run of a different recipe (it differs at {', '.join(diffs[:5])}); "
                                 "resume with the same recipe and --set values, or choose another --out")
            self.done = done
        elif writer:
            out.mkdir(parents=True, exist_ok=True)
            self._write()

    def finished(self, stage: str) -> dict[str, Any] | None:
        """What was recorded when ``stage`` finished, or None if it has not."""
        return self.done.get(stage)

    def mark(self, stage: str, **info: Any) -> None:
        """Record that ``stage`` finished (after its outputs are written)."""
        self.done[stage] = info
        if self.writer:
            self._write()

    def _write(self) -> None:
        self.store.save({"recipe": self.values, "done": self.done})
