"""The trial-claim protocol: which trials hold one of the ``--trials`` places, shared by processes without a lock.

A trial first decides (draws its candidate, checks the budget) and only then claims a place; the
lowest trial numbers win. A trial of a process that died stops being waited on once Optuna's
heartbeat fails it.
"""

from __future__ import annotations

import time
from typing import Any

from harden.searching.storage import HEARTBEAT_S

# Trials that count towards --trials: candidates within budget that were (or are being) trained.
TRAINED = ("measured", "pruned", "error", "training")
DECIDING = "deciding"  # a trial drawing its candidate: no place held yet
CLAIM_WAIT_S = 4 * HEARTBEAT_S  # the longest wait for a lower-numbered trial to decide (then its process is dead)
NOT_TRAINED = ("rejected", "duplicate", "surplus")
EXHAUSTED_AFTER = 20  # this many trials in a row without a new candidate within budget end the search


def _counts(t: Any) -> bool:
    """Whether trial ``t`` holds one of the ``--trials`` places: trained, in training, or queued to retry one.

    A trial still deciding (drawing its candidate, checking the budget) holds no place yet: counting it
    could let two processes each stop for the other's trial, which may turn out a repeat.
    """
    return t.state.name in ("COMPLETE", "PRUNED", "RUNNING", "WAITING") and t.user_attrs.get("status") in TRAINED


def counted(study: Any, below: int | None = None) -> int:
    """Trials that count towards ``--trials``: trained (or in training, or queued) candidates within budget.

    Candidates rejected before training (over budget, not applicable), repeats of an earlier candidate
    and trials still deciding cost no training and do not count.
    """
    return sum(1 for t in study.get_trials(deepcopy=False) if _counts(t) and (below is None or t.number < below))


def _deciding_below(study: Any, number: int) -> bool:
    return any(t.number < number and t.state.name == "RUNNING" and t.user_attrs.get("status") in (None, DECIDING)
               for t in study.get_trials(deepcopy=False))


def claim_place(trial: Any, trials: int) -> bool:
    """Mark ``trial`` as training if one of the ``trials`` places is free; the lowest trial numbers win.

    Processes sharing a study claim without a lock: each marks its trial, waits until every
    lower-numbered running trial has decided, then counts the places held below its own number.
    A trial whose process died stops being waited on once Optuna's heartbeat fails it.
    """
    trial.set_user_attr("status", "training")
    deadline = time.monotonic() + CLAIM_WAIT_S
    while _deciding_below(trial.study, trial.number) and time.monotonic() < deadline:
        time.sleep(0.2)
    return counted(trial.study, below=trial.number) < trials


def exhausted(study: Any) -> bool:
    """Whether the last :data:`EXHAUSTED_AFTER` trials found nothing new to train (the space within budget is spent)."""
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name in ("COMPLETE", "PRUNED")]
    last = done[-EXHAUSTED_AFTER:]
    return len(last) == EXHAUSTED_AFTER and all(t.user_attrs.get("status") in NOT_TRAINED for t in last)
