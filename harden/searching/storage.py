"""The study's storage: an Optuna RDB storage with heartbeats, opened safely by several processes at once.

The study lives in an Optuna storage (SQLite in the output folder by default); several processes given
the same storage URL share its trials. Optuna creates a new storage's tables on first open without a
lock, so :func:`open_storage` retries the errors of that race.
"""

from __future__ import annotations

import random
import time
import warnings
from typing import Any

from harden.errors import UsageError

STUDY_NAME = "harden-search"
DB_NAME = "study.db"
HEARTBEAT_S = 30
SCHEMA_RACE_TRIES = 8  # tries to open a storage that other processes are creating at the same moment


def open_storage(url: str) -> Any:
    """An Optuna RDB storage with heartbeats (a killed process's trial is failed and retried once).

    Several processes may open the same new storage at once: Optuna creates its tables on first open
    without a lock, so all but one can fail with "table already exists" or a duplicate version row.
    Those errors are retried (the schema only grows, so a later try finds it complete); any other
    error is the user's URL and is reported at once.
    """
    for attempt in range(SCHEMA_RACE_TRIES):
        try:
            return _rdb_storage(url)
        except Exception as exc:  # SQLAlchemy's many error types: a bad URL, a missing driver, no server
            reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            if attempt + 1 < SCHEMA_RACE_TRIES and _schema_race(reason):
                time.sleep(random.uniform(0.1, 0.5) * (attempt + 1))
                continue
            raise UsageError(f"cannot open the study storage '{redact(url)}' ({reason}); give an SQLAlchemy URL "
                             "such as sqlite:///search.db or postgresql://user@host/db") from None
    raise AssertionError("unreachable")


def _rdb_storage(url: str) -> Any:
    import optuna
    from optuna.storages import RDBStorage

    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S, grace_period=4 * HEARTBEAT_S,
                          **_retry_stale())


def _schema_race(reason: str) -> bool:
    """Whether an error opening a storage is another process creating the same schema at the same moment."""
    text = reason.lower()
    return any(sign in text for sign in ("already exists", "unique constraint", "duplicate key", "database is locked"))


def _retry_stale() -> dict[str, Any]:
    """Optuna's callback that queues a stale trial (its process died) once more, by its current name."""
    from optuna import storages

    if hasattr(storages, "RetryHeartbeatStaleTrialCallback"):  # optuna >= 4.9
        return {"heartbeat_stale_trial_callback": storages.RetryHeartbeatStaleTrialCallback(max_retry=1)}
    return {"failed_trial_callback": storages.RetryFailedTrialCallback(max_retry=1)}


def redact(url: str) -> str:
    """A storage URL without its password."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url
