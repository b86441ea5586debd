"""What a run reports as it goes, as events, and the sinks that receive them.

Fine-tuning, evaluation and ``harden run`` do not print progress, call user callbacks or talk to a
tracker themselves: they :meth:`Events.emit` events, and each sink takes the ones it cares about.
The sinks here are the terminal's progress bar (:class:`Terminal`), the JSON report
(:class:`ReportFile`) and the caller's callbacks (:class:`Callbacks`); an experiment tracker is one
more (:class:`harden.tracking.TrackerSink`).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from harden.runtime.atomic import write_text

RECORD_KINDS = ("settings", "epoch", "batch", "figures", "report")


@dataclass(frozen=True)
class Record:
    """Named values a run reports, by ``kind``:

    - ``settings``: the command's configuration, once at the start
    - ``epoch``: one fine-tuning epoch's numbers (``epoch``, ``loss``, ``val_clean``, ...)
    - ``batch``: an evaluation batch finished on every rank (``stage``, ``batch``, ``batches``, ``rank``)
    - ``figures``: named numbers of the run, at ``step`` if given
    - ``report``: an evaluation's final report
    """

    kind: str
    values: Mapping[str, Any]
    step: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in RECORD_KINDS:
            raise ValueError(f"unknown record kind '{self.kind}' (known: {', '.join(RECORD_KINDS)})")


@dataclass(frozen=True)
class ArtifactWritten:
    """A file the run wrote (``None``: none was)."""

    path: str | os.PathLike[str] | None


@dataclass(frozen=True)
class ProgressStarted:
    """A progress line of ``total`` units begins (``keep``: leave it on the screen when it ends)."""

    total: int
    label: str | None = None
    unit: str = "it"
    keep: bool = False


@dataclass(frozen=True)
class ProgressMade:
    """``n`` more units done; ``label`` and ``status`` (a mapping or a text) replace what the line shows."""

    n: int = 1
    label: str | None = None
    status: Mapping[str, str] | str | None = None


@dataclass(frozen=True)
class ProgressEnded:
    """The progress line is complete (or abandoned)."""


Event = Record | ArtifactWritten | ProgressStarted | ProgressMade | ProgressEnded


class Sink(Protocol):
    """Receives a run's events; ignores the kinds it has no use for."""

    def handle(self, event: Event) -> None: ...


class Events:
    """A run's sinks: every emitted event goes to each of them, in the order given."""

    def __init__(self, *sinks: Sink | None) -> None:
        self.sinks = [s for s in sinks if s is not None]

    def emit(self, event: Event) -> None:
        """Send ``event`` to every sink."""
        for sink in self.sinks:
            sink.handle(event)


class Terminal:
    """Progress events as a tqdm bar on stderr, as the commands have always shown."""

    def __init__(self) -> None:
        self.bar: Any = None

    def handle(self, event: Event) -> None:
        if isinstance(event, ProgressStarted):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=event.total, desc=event.label, leave=event.keep, unit=event.unit, file=sys.stderr,
                            dynamic_ncols=True)
        elif isinstance(event, ProgressMade) and self.bar is not None:
            if event.label is not None:
                self.bar.set_description(event.label, refresh=False)
            if isinstance(event.status, str):
                self.bar.set_postfix_str(event.status, refresh=False)
            elif event.status is not None:
                self.bar.set_postfix(event.status, refresh=False)
            self.bar.update(event.n)
        elif isinstance(event, ProgressEnded) and self.bar is not None:
            self.bar.close()
            self.bar = None


class ReportFile:
    """The evaluation report as a JSON file, written atomically when it is ready."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = path

    def handle(self, event: Event) -> None:
        if isinstance(event, Record) and event.kind == "report":
            write_text(self.path, json.dumps(event.values, indent=2) + "\n")


class Callbacks:
    """The caller's functions: ``on_epoch`` gets each epoch's numbers, ``on_batch`` each evaluation batch's."""

    def __init__(self, *, on_epoch: Callable[[dict[str, Any]], None] | None = None,
                 on_batch: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.on_epoch, self.on_batch = on_epoch, on_batch

    def handle(self, event: Event) -> None:
        if not isinstance(event, Record):
            return
        call = {"epoch": self.on_epoch, "batch": self.on_batch}.get(event.kind)
        if call is not None:
            call(dict(event.values))
