"""One trial of a search: candidate -> budget check -> proxies -> fine-tuning with per-epoch pruning.

Every trial applies its candidate to the same starting weights, rejects it before any training when
it is over the MACs or parameter budget, and otherwise fine-tunes it with the same settings and seed,
reporting the robust validation accuracy after each epoch so that the pruner (successive halving by
default) stops the trials that fall behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from harden.data import ImageDataset
from harden.errors import HardenError, UsageError
from harden.model import HardenedModel
from harden.searching.claims import DECIDING, claim_place, counted
from harden.searching.proxies import candidate_proxies
from harden.searching.space import SearchSpace


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
        if counted(trial.study) >= self.trials:
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
    from harden.training.train_data import split_indices

    cfg = make_config(**options)
    val, _ = split_indices(len(dataset), cfg)
    return load_tensors(dataset, Selection(dataset.spec, dataset.split, len(val), "held-out", cfg.seed, val))


def robust_outcome(model: HardenedModel, images: tuple[Any, Any], options: dict[str, Any], device: Any) -> str:
    """Per-image robustness of ``model`` to the validation attack (``val_attack``, ``val_steps``) as a '0'/'1'
    string."""
    from harden.schemas.finetune import validation_steps
    from harden.searching.verdict import outcome_text

    attack = options.get("val_attack", "pgd")
    steps = validation_steps(attack, options.get("val_steps"))
    if attack == "apgd-ce":
        return outcome_text(_apgd_robust(model, images, options, steps, device))
    from harden.evaluation import evaluate

    report = evaluate(model, images, attack="pgd", eps=options["eps"], norm=options["norm"],
                      steps=steps, n=None, seed=options["seed"], check_examples=0, device=device or "auto")
    return outcome_text([o == "robust" for o in report.outcome])


def _apgd_robust(model: HardenedModel, images: tuple[Any, Any], options: dict[str, Any], steps: int,
                 device: Any) -> list[bool]:
    """Whether each of the held-out images (floats in [0, 1], :func:`held_out_images`) stays classified right
    under APGD-CE (``steps`` iterations, one restart)."""
    import torch

    from harden.attacks.apgd import apgd_ce
    from harden.runtime.distributed import resolve_device
    from harden.runtime.modes import eval_mode

    dev = resolve_device(device or "auto")
    model = model.to(dev)
    x, y = images
    robust: list[bool] = []
    with eval_mode(model):
        for i in range(0, len(y), 256):
            xb, yb = x[i:i + 256].to(dev), y[i:i + 256].to(dev)
            adv = apgd_ce(model, xb, yb, eps=options["eps"], norm=options["norm"], iterations=steps,
                          seed=options["seed"] + i)
            with torch.no_grad():
                robust += (model(adv).argmax(1) == yb).tolist()
    return robust


def _text(transforms: Sequence[str]) -> str:
    return ", ".join(transforms) or "base model"
