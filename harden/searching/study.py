"""``harden.search``: an Optuna study over the search space, one adversarial fine-tuning per trial.

Every trial applies its candidate to the same starting weights, rejects it before any training when
it is over the MACs or parameter budget, and otherwise fine-tunes it with the same settings and seed,
reporting the robust validation accuracy after each epoch so that the pruner (successive halving by
default) stops the trials that fall behind. The study lives in an Optuna storage (SQLite in the output
folder by default): ``resume=True`` continues it, and several processes given the same storage URL
share its trials, which is all the scale-out there is.
"""

from __future__ import annotations

import math
import random
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from harden.data import ImageDataset
from harden.errors import HardenError, UsageError
from harden.model import HardenedModel
from harden.schemas.search import PRUNERS
from harden.searching.proxies import candidate_proxies
from harden.searching.space import SearchSpace

STUDY_NAME = "harden-search"
DB_NAME = "study.db"
HEARTBEAT_S = 30
SCHEMA_RACE_TRIES = 8  # tries to open a storage that other processes are creating at the same moment
# Trials that count towards --trials: candidates within budget that were (or are being) trained.
TRAINED = ("measured", "pruned", "error", "training")
DECIDING = "deciding"  # a trial drawing its candidate: no place held yet
CLAIM_WAIT_S = 4 * HEARTBEAT_S  # the longest wait for a lower-numbered trial to decide (then its process is dead)
NOT_TRAINED = ("rejected", "duplicate", "surplus")
EXHAUSTED_AFTER = 20  # this many trials in a row without a new candidate within budget end the search
_UNITS = {"k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}


def parse_budget(text: str | float | int | None, base: int, what: str) -> int | None:
    """``"3x"`` (times the base model's cost), ``"2G"``, ``"20M"``, ``"500K"`` or a number -> an absolute budget.

    A budget below the base model's own cost is an error: not even the base model would fit.
    """
    if text is None:
        return None
    raw = str(text).strip()
    try:
        if raw.lower().endswith("x"):
            value = float(raw[:-1]) * base
        elif raw and raw[-1].lower() in _UNITS:
            value = float(raw[:-1]) * _UNITS[raw[-1].lower()]
        else:
            value = float(raw)
    except ValueError:
        raise UsageError(f"--budget-{what} takes a multiple of the base model (3x) or an amount (2G, 20M, 500K), "
                         f"got '{raw}'") from None
    if not math.isfinite(value) or value < base:
        raise UsageError(f"--budget-{what} {raw} is below the base model's own {base:,} {what}; "
                         f"give at least 1x (or {base:,})")
    return int(value)


def make_pruner(name: str, epochs: int) -> Any:
    """The Optuna pruner called ``name`` (rungs at epochs 1, 3, 9, ...); ``none`` never prunes."""
    import optuna

    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UsageError(f"--pruner must be one of {', '.join(PRUNERS)}, got '{name}'")


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


def _counts(t: Any) -> bool:
    """Whether trial ``t`` holds one of the ``--trials`` places: trained, in training, or queued to retry one.

    A trial still deciding (drawing its candidate, checking the budget) holds no place yet: counting it
    could let two processes each stop for the other's trial, which may turn out a repeat.
    """
    return t.state.name in ("COMPLETE", "PRUNED", "RUNNING", "WAITING") and t.user_attrs.get("status") in TRAINED


def _counted(study: Any, below: int | None = None) -> int:
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
    return _counted(trial.study, below=trial.number) < trials


def exhausted(study: Any) -> bool:
    """Whether the last :data:`EXHAUSTED_AFTER` trials found nothing new to train (the space within budget is spent)."""
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name in ("COMPLETE", "PRUNED")]
    last = done[-EXHAUSTED_AFTER:]
    return len(last) == EXHAUSTED_AFTER and all(t.user_attrs.get("status") in NOT_TRAINED for t in last)


class Objective:
    """One trial: candidate -> budget check -> proxies -> fine-tuning with per-epoch pruning -> robust accuracy."""

    def __init__(self, base: HardenedModel, dataset: ImageDataset, space: SearchSpace, options: dict[str, Any], *,
                 budgets: dict[str, int | None], trials: int, progress: bool, device: Any,
                 echo: Callable[[str], Any]) -> None:
        self.base, self.dataset, self.space, self.options = base, dataset, space, options
        self.budgets, self.trials, self.progress, self.device, self.echo = budgets, trials, progress, device, echo

    def val_outcome(self, model: HardenedModel) -> str:
        """``model``'s per-image robustness on the study's held-out images (the same for every trial)."""
        if getattr(self, "_val", None) is None:
            self._val = held_out_images(self.dataset, self.options)
        return robust_outcome(model, self._val, self.options, self.device)

    def __call__(self, trial: Any) -> float:

        trial.set_user_attr("status", DECIDING)  # also replaces the status a retried trial inherits
        if _counted(trial.study) >= self.trials:
            self._surplus(trial)
        params = {d.name: trial.suggest_categorical(d.name, list(d.choices)) for d in self.space.dimensions}
        transforms = self.space.transforms(params)
        trial.set_user_attr("transforms", transforms)
        trial.set_user_attr("params_searched", params)
        same = self._earlier_same(trial, transforms)
        if same is not None:
            return self._duplicate(trial, same)
        model = self._candidate(trial, transforms)
        if not claim_place(trial, self.trials):
            self._surplus(trial)
        return self._train(trial, model, transforms)

    def _surplus(self, trial: Any) -> None:
        import optuna

        trial.set_user_attr("status", "surplus")
        trial.study.stop()
        raise optuna.TrialPruned("the study already has its trials")

    def _earlier_same(self, trial: Any, transforms: list[str]) -> Any:
        """An earlier trial of the same candidate (finished, or still deciding in another process), if any."""
        for t in trial.study.get_trials(deepcopy=False):
            if t.number < trial.number and t.state.name != "FAIL" and t.user_attrs.get("transforms") == transforms \
                    and t.user_attrs.get("status") not in ("duplicate", "surplus"):
                return t
        return None

    def _duplicate(self, trial: Any, same: Any) -> float:
        import optuna

        trial.set_user_attr("status", "duplicate")
        trial.set_user_attr("reason", f"same candidate as trial {same.number}")
        self.echo(f"trial {trial.number}: {_text(trial.user_attrs['transforms'])}: same as trial {same.number}, "
                  "not trained again")
        if same.state.name == "COMPLETE" and same.value is not None:
            return float(same.value)
        raise optuna.TrialPruned(f"same candidate as trial {same.number}")

    def _reject(self, trial: Any, reason: str) -> None:
        import optuna

        trial.set_user_attr("status", "rejected")
        trial.set_user_attr("reason", reason)
        self.echo(f"trial {trial.number}: {_text(trial.user_attrs['transforms'])}: rejected before training, {reason}")
        raise optuna.TrialPruned(reason)

    def _candidate(self, trial: Any, transforms: list[str]) -> HardenedModel:
        from harden.pipeline import apply
        from harden.summary import human, model_facts

        try:
            model = apply(self.base, transforms) if transforms else self.base
            facts = model_facts(model)
        except HardenError as exc:
            self._reject(trial, f"the transforms do not apply: {str(exc).splitlines()[0][:200]}")
        for key, value in (("macs", facts.macs), ("params", facts.params)):
            trial.set_user_attr(key, int(value))
        trial.set_user_attr("feature_map", list(facts.feature_map) if facts.feature_map else None)
        for key, value, unit in (("macs", facts.macs, "MACs"), ("params", facts.params, "parameters")):
            limit = self.budgets.get(key)
            if limit is not None and value > limit:
                self._reject(trial, f"over budget: {human(value)} {unit} > {human(limit)}")
        trial.set_user_attr("proxies", candidate_proxies(model, facts.feature_map))
        return model

    def _train(self, trial: Any, model: HardenedModel, transforms: list[str]) -> float:
        import optuna

        from harden.training import finetune

        history: list[dict[str, Any]] = []

        def after_epoch(entry: dict[str, Any]) -> None:
            history.append({k: entry.get(k) for k in ("epoch", "loss", "val_clean", "val_robust", "seconds")})
            trial.set_user_attr("history", history)
            trial.report(float(entry["val_robust"]), step=int(entry["epoch"]))
            if int(entry["epoch"]) < self.options["epochs"] and trial.should_prune():  # a finished trial is kept
                reason = f"pruned after epoch {entry['epoch']}: robust {entry['val_robust']:.1f}%"
                trial.set_user_attr("status", "pruned")
                trial.set_user_attr("reason", reason)
                self.echo(f"trial {trial.number}: {_text(transforms)}: {reason}")
                raise optuna.TrialPruned(reason)

        t0 = time.perf_counter()
        try:
            tuned = finetune(model, self.dataset, progress=self.progress, device=self.device, callback=after_epoch,
                             curves=False, **self.options)
        except UsageError:
            raise
        except HardenError as exc:  # a failure of this candidate (a non-finite loss): recorded, the search goes on
            trial.set_user_attr("status", "error")
            trial.set_user_attr("reason", str(exc).splitlines()[0][:300])
            self.echo(f"trial {trial.number}: {_text(transforms)}: failed, {exc}")
            raise optuna.TrialPruned(str(exc)) from None
        entry = tuned.provenance.finetune
        trial.set_user_attr("val_outcome", self.val_outcome(tuned))
        val = entry.validation
        for key, value in (("clean_acc", val.clean_acc), ("robust_acc", val.robust_acc), ("n", val.n),
                           ("kept_epoch", entry.kept_epoch), ("epochs_run", entry.epochs_run),
                           ("seconds", round(time.perf_counter() - t0, 2)), ("status", "measured")):
            trial.set_user_attr(key, value)
        self.echo(f"trial {trial.number}: {_text(transforms)}: clean {val.clean_acc:.1f}%, robust "
                  f"{val.robust_acc:.1f}% (epoch {entry.kept_epoch} of {entry.epochs_run})")
        return float(val.robust_acc)


def held_out_images(dataset: ImageDataset, options: dict[str, Any]) -> tuple[Any, Any]:
    """The held-out training images (x, y) that fine-tuning with ``options`` validates on."""
    from harden.data import Selection, load_tensors
    from harden.training import make_config
    from harden.training.data import split_indices

    cfg = make_config(**options)
    val, _ = split_indices(len(dataset), cfg)
    return load_tensors(dataset, Selection(dataset.spec, dataset.split, len(val), "held-out", cfg.seed, val))


def robust_outcome(model: HardenedModel, images: tuple[Any, Any], options: dict[str, Any], device: Any) -> str:
    """Per-image robustness of ``model`` to the validation attack (PGD, ``val_steps``) as a '0'/'1' string."""
    from harden.evaluation import evaluate
    from harden.searching.verdict import outcome_text

    report = evaluate(model, images, attack="pgd", eps=options["eps"], norm=options["norm"],
                      steps=options["val_steps"], n=None, seed=options["seed"], check_examples=0,
                      device=device or "auto")
    return outcome_text([o == "robust" for o in report["examples"]["outcome"]])


def _text(transforms: Sequence[str]) -> str:
    return ", ".join(transforms) or "base model"
