"""Where an evaluation stands: each example's status, and the per-batch progress file ``--resume`` reads."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harden.errors import HardenError, UsageError
from harden.evaluation import honesty_checks as chk
from harden.runtime import distributed as hd
from harden.runtime.store import Store, as_json, differences

PROGRESS_FORMAT = "harden.evaluate.progress/1"

# per-example status codes; a positive code k means "broken by the k-th attack"
PENDING, MISCLASSIFIED, ROBUST = -2, -1, 0


class Interrupted(HardenError):
    """Raised (by a callback) to stop an evaluation after a batch; its progress file stays."""


def progress_store(report_path: Path) -> Store:
    """Where an evaluation writing ``report_path`` keeps its per-batch progress: ``REPORT.progress``."""
    return Store(Path(str(report_path) + ".progress"), format=PROGRESS_FORMAT,
                 unreadable="progress file '{path}' is unreadable ({reason}); delete it to start again",
                 foreign="'{path}' is not a harden evaluation progress file; delete it to start again")


def robust_at_start(status: torch.Tensor, stage: int) -> torch.Tensor:
    """Examples still correctly classified when attack ``stage`` (1-based) starts."""
    return (status == ROBUST) | (status >= stage)


def count_correct(status: torch.Tensor, stage: int) -> int:
    """Examples still correctly classified after ``stage`` (0 = clean) has finished."""
    return int(((status == ROBUST) | (status > stage)).sum())


def outcomes(status: torch.Tensor, stages: Sequence[str]) -> list[str]:
    """Each example's outcome: ``misclassified``, ``robust``, the attack that broke it, or ``pending``."""
    out = []
    for code in status.tolist():
        if code == MISCLASSIFIED:
            out.append("misclassified")
        elif code == ROBUST:
            out.append("robust")
        elif code > 0:
            out.append(stages[code - 1])
        else:
            out.append("pending")
    return out


@dataclass
class Progress:
    """Where an evaluation stands: each example's status, the stage and batch reached, the time and warnings
    so far; saved after every batch to ``store`` (when there is one) for ``--resume``."""

    store: Store | None
    fingerprint: dict[str, Any]
    batch_size: int
    status: torch.Tensor
    stage: int = 0
    batches_done: int = 0
    stage_seconds: list[float] | None = None
    elapsed: float = 0.0
    warnings: list[dict[str, Any]] | None = None
    x_range: tuple[float, float] = (math.inf, -math.inf)
    resumed: bool = False

    @classmethod
    def fresh(cls, store: Store | None, fingerprint: dict[str, Any], batch_size: int, n: int) -> Progress:
        """A run's progress before anything ran: every one of ``n`` examples pending."""
        return cls(store, fingerprint, batch_size, torch.full((n,), PENDING, dtype=torch.long))

    def save(self, log: chk.WarningLog, elapsed: float) -> None:
        """Write the progress and ``log``'s warnings to the store (on the main rank; nothing without a store)."""
        if self.store is None or not hd.is_main():
            return
        self.store.save({
            "format": PROGRESS_FORMAT, "fingerprint": self.fingerprint, "batch_size": self.batch_size,
            "stage": self.stage, "batches_done": self.batches_done, "status": self.status.tolist(),
            "stage_seconds": self.stage_seconds, "elapsed": elapsed, "warnings": log.as_dicts(),
            "x_range": list(self.x_range) if math.isfinite(self.x_range[0]) else None,
        })

    @classmethod
    def load(cls, store: Store, fingerprint: dict[str, Any], batch_size: int | None) -> Progress | None:
        """The saved progress of this same run (None when there is none); a :class:`UsageError` for another run's."""
        state = store.load()
        if state is None:
            return None
        path = store.path
        old = state.get("fingerprint")
        for key, was, now in differences(old if isinstance(old, dict) else {}, as_json(fingerprint), depth=1):
            if key in fingerprint:
                raise UsageError(f"progress file '{path}' belongs to another run ({key} was {was!r}, "
                                 f"now {now!r}); delete it or run without --resume")
        if batch_size is not None and batch_size != state["batch_size"]:
            raise UsageError(f"progress file '{path}' was written with --batch-size {state['batch_size']}; "
                             "resume with the same batch size (or auto)")
        rng = state.get("x_range")
        return cls(store, fingerprint, int(state["batch_size"]), torch.tensor(state["status"], dtype=torch.long),
                   int(state["stage"]), int(state["batches_done"]), list(state["stage_seconds"]),
                   float(state["elapsed"]), list(state.get("warnings") or []),
                   (rng[0], rng[1]) if rng else (math.inf, -math.inf), True)
