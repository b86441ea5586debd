"""The library entry point :func:`search` and the study's set-up: checks, storage, fingerprint, results."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harden.data import ImageDataset
from harden.errors import HardenError, UsageError
from harden.model import HardenedModel
from harden.schemas.finetune import FinetuneConfig
from harden.schemas.search import SearchConfig, make_search_config
from harden.searching.budgets import budget_text, parse_budget
from harden.searching.claims import EXHAUSTED_AFTER, counted, exhausted
from harden.searching.objective import Objective, held_out_images, robust_outcome
from harden.searching.outputs import (
    SearchResult,
    best_recipe,
    mark_front,
    measured_row,
    proxy_scores,
    table,
    write_outputs,
)
from harden.searching.pruners import make_pruner
from harden.searching.space import SearchSpace, build_space
from harden.searching.storage import DB_NAME, STUDY_NAME, open_storage, redact
from harden.searching.verdict import confirm as confirm_candidates
from harden.searching.verdict import pair_with_base

_EVALUATE = {"attacks": ["pgd", "autoattack"], "n": 1000}


def _eps_text(value: float) -> str | float:
    k = value * 255
    return f"{round(k):g}/255" if abs(k - round(k)) < 1e-9 and round(k) > 0 else value


def _finetune_values(cfg: Any) -> dict[str, Any]:
    """The fine-tuning settings that differ from harden's defaults, as recipe values."""
    from harden.training import FinetuneConfig
    from harden.training.checkpoint import NOT_FINGERPRINTED

    default = FinetuneConfig().as_dict()
    out = {}
    for key, value in cfg.as_dict().items():
        if key in NOT_FINGERPRINTED or value == default[key] or value is None:
            continue
        out[key] = _eps_text(value) if key in ("eps", "step_size") and cfg.norm == "Linf" else value
    out.setdefault("method", cfg.method)
    out.setdefault("epochs", cfg.epochs)
    return out


def _check_searchable(name: str) -> None:
    """A search ranks trials by robust accuracy: a method that declares itself unfit for that is refused."""
    from harden.methods import METHODS, get_method

    if not get_method(name).searchable:
        fit = ", ".join(m.name for m in METHODS if m.searchable)
        raise UsageError(f"--method {name} is not offered for a search, which ranks trials by robust accuracy; "
                         f"use one of {fit}")


def _model_block(model: HardenedModel, given: dict[str, Any] | None) -> dict[str, Any]:
    """best.yaml's ``model`` section: given by the caller (the CLI knows the weights path) or from the provenance."""
    if given is not None:
        return {k: v for k, v in given.items() if v is not None}
    m = model.provenance.model
    c, h, w = m.input_size
    block = {"spec": m.spec, "num_classes": m.num_classes,
             "input_size": w if (c, h) == (3, w) else "x".join(map(str, m.input_size)),
             "mean": list(m.mean), "std": list(m.std)}
    if m.kwargs:  # the constructor arguments (a grayscale WRN's in_chans, its base_width) build the same network
        block["kwargs"] = dict(m.kwargs)
    if m.pretrained:
        block["pretrained"] = True
    return block


def _fingerprint(model: HardenedModel, dataset: ImageDataset, space: SearchSpace, cfg: Any,
                 budgets: dict[str, int | None], pruner: str) -> dict[str, Any]:
    from harden.training import state_digest
    from harden.training.checkpoint import fingerprinted_config

    return json.loads(json.dumps({
        "model": {"spec": model.spec, "transforms": [t.name for t in model.provenance.transforms],
                  "input_size": list(model.input_size), "weights": state_digest(model)},
        "data": dataset.spec, "space": space.to_dict()["dimensions"], "budgets": budgets, "pruner": pruner,
        "finetune": fingerprinted_config(cfg),
    }))


def _diffs(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The dotted keys where a saved study's fingerprint and this search's differ."""
    from harden.runtime.store import as_json, differences

    return [key or "(everything)" for key, _, _ in differences(old, as_json(new))]


def _storage_url(out: Path | None, storage: str | None, resume: bool) -> str:
    if storage is not None:
        return storage
    if out is None:
        raise UsageError("search() needs out= (a folder for the study and the results) or storage=")
    db = out / DB_NAME
    if db.exists() and not resume:
        raise UsageError(f"'{out}' holds a search already ({db.name}); pass --resume to continue it or choose "
                         "another --out")
    if resume and not db.exists():
        raise UsageError(f"nothing to resume: '{out}' holds no {DB_NAME}; run without --resume")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out '{out}' exists and is not a folder")
    return f"sqlite:///{db.resolve()}"


def _configs(model: Any, config: SearchConfig | None, training: FinetuneConfig | None,
             options: dict[str, Any]) -> tuple[SearchConfig, FinetuneConfig]:
    """The study's settings and every trial's fine-tuning: the configs given, with the keywords of each in place."""
    from harden.training import make_config

    if not isinstance(model, HardenedModel):
        raise UsageError("search() takes a model made by harden.load_model, harden.apply, harden.load or harden.wrap")
    study_names = {f.name for f in dataclasses.fields(SearchConfig)}
    study = make_search_config(config, **{k: v for k, v in options.items() if k in study_names})
    cfg = make_config(training, **{k: v for k, v in options.items() if k not in study_names})
    if cfg.val_n == 0:
        raise UsageError("a search scores each trial on held-out images: --val-n must be positive")
    _check_searchable(cfg.method)
    return study, cfg


def _open_study(url: str, fingerprint: dict[str, Any], *, resume: bool,
                sampler: Any, pruner: Any, identity: dict[str, str]) -> Any:
    import optuna

    storage = open_storage(url)
    try:
        study = optuna.load_study(study_name=STUDY_NAME, storage=storage, sampler=sampler, pruner=pruner)
    except KeyError:
        study = None
    if study is None:
        if resume:
            raise UsageError(f"nothing to resume: the storage '{redact(url)}' holds no harden search; run without "
                             "--resume")
        study = optuna.create_study(storage=storage, study_name=STUDY_NAME, direction="maximize", sampler=sampler,
                                    pruner=pruner, load_if_exists=True)
    saved = study.user_attrs.get("harden_search")
    if saved is None:
        study.set_user_attr("harden_search", fingerprint)
        study.enqueue_trial(identity, user_attrs={"enqueued": "base model"}, skip_if_exists=True)
    elif saved != fingerprint:
        raise UsageError(f"the study in '{redact(url)}' is a search with other settings (they differ at "
                         f"{', '.join(_diffs(saved, fingerprint)[:5])}); use the same model, data, space, budgets "
                         "and fine-tuning settings, or another --out / --storage")
    return study


def _skipped_entry(t: Any) -> dict[str, Any] | None:
    status = t.user_attrs.get("status")
    if status == "surplus" or (t.state.name == "COMPLETE" and status == "measured"):
        return None
    if t.state.name == "FAIL":
        status = "failed"
    elif t.state.name in ("RUNNING", "WAITING"):
        status = "running" if t.state.name == "RUNNING" else "queued"
    reason = t.user_attrs.get("reason") or t.system_attrs.get("fail_reason") or status
    entry = {"trial": t.number, "status": status or t.state.name.lower(), "reason": str(reason),
             "transforms": t.user_attrs.get("transforms"), "macs": t.user_attrs.get("macs"),
             "params": t.user_attrs.get("params"), "epochs_run": len(t.user_attrs.get("history", []))}
    return entry


def collect(study: Any, base: dict[str, Any], attack: dict[str, Any], space: SearchSpace,
            info: dict[str, Any]) -> SearchResult:
    """The study's trials as a :class:`SearchResult` (measured rows with the Pareto front marked, the rest)."""
    trials = study.get_trials(deepcopy=False)
    rows = [measured_row(t.number, t.user_attrs) for t in trials
            if t.state.name == "COMPLETE" and t.user_attrs.get("status") == "measured"]
    mark_front(rows)
    skipped = [e for e in (_skipped_entry(t) for t in trials) if e is not None]
    info = {**info, "trials": counted(study), "measured": len(rows)}
    return SearchResult(rows, skipped, base, attack, proxy_scores(rows), info, space.to_dict())


def search(model: HardenedModel, data: str | ImageDataset, config: SearchConfig | None = None,
           training: FinetuneConfig | None = None, *, model_block: dict[str, Any] | None = None,
           sampler_seed: int | None = None, progress: bool = False, echo: Callable[[str], Any] | None = None,
           device: Any = None, download: bool = False, **options: Any) -> SearchResult:
    """Search harden's transforms for ``model`` under a MACs/parameter budget, measuring each candidate.

    The study's settings are a :class:`~harden.schemas.search.SearchConfig` (``out``, ``budget_macs``,
    ``budget_params``, ``trials``, ``timeout``, ``storage``, ``resume``, ``space``, ``extra``, ``pruner``,
    ``confirm``, ``recipe_epochs``) and every trial's fine-tuning a :class:`harden.training.FinetuneConfig`
    (``method``, ``epochs``, ``train_n``, ``val_n``, ``eps``, ...): ``config`` and ``training``, or harden's
    defaults, with keyword ``options`` (fields of either) in their place. Budgets are ``"3x"`` (times the
    base model) or amounts (``"2G"``, ``"20M"``). ``trials`` is the study's total: a resumed study or
    several processes sharing ``storage`` (an SQLAlchemy URL) run until it holds that many.
    ``space`` names the dimensions searched (all that apply by default); each ``extra`` transform is
    searched on or off. ``confirm`` front candidates and the base are trained again with a second seed and
    measured on twice the held-out images; a winner is named only when it beats the base in both measurements
    (:mod:`harden.searching.verdict`), else the verdict keeps the base. With ``out``, writes ``pareto.json``,
    ``pareto.png``, ``best.yaml`` (and the SQLite study).
    """
    optuna = _import_optuna()
    from harden.summary import model_facts
    from harden.training import resolve_data

    say = echo or (lambda _s: None)
    s, cfg = _configs(model, config, training, options)
    pruner_obj = make_pruner(s.pruner, cfg.epochs, cfg.eps_warmup)
    if s.storage is not None:
        open_storage(s.storage)  # a URL that cannot be opened fails before any work
    dataset = resolve_data(data, model, download, split=cfg.split, resize=cfg.resize, crop=cfg.crop)
    _check_held_out(cfg.val_n, len(dataset))
    facts = model_facts(model)
    budgets = {"macs": parse_budget(s.budget_macs, facts.macs, "macs"),
               "params": parse_budget(s.budget_params, facts.params, "params")}
    the_space = build_space(model, s.space, s.extra)
    out_path = Path(s.out) if s.out is not None else None
    url = _storage_url(out_path, s.storage, s.resume)
    created = [] if out_path is None or out_path.exists() else [out_path]
    if out_path is not None and s.storage is None:
        out_path.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = _open_study(url, _fingerprint(model, dataset, the_space, cfg, budgets, s.pruner),
                            resume=s.resume, sampler=optuna.samplers.TPESampler(seed=sampler_seed), pruner=pruner_obj,
                            identity=the_space.identity())
    except BaseException:
        _remove_empty(created)
        raise
    return _run_study(study, model, dataset, the_space, cfg, facts, budgets, url=url, out=out_path, trials=s.trials,
                      timeout=s.timeout, pruner=s.pruner, progress=progress, device=device, echo=say,
                      model_block=_model_block(model, model_block), recipe_epochs=s.recipe_epochs, confirm=s.confirm)


def _run_study(study: Any, model: HardenedModel, dataset: ImageDataset, space: SearchSpace, cfg: Any, facts: Any,
               budgets: dict[str, int | None], *, url: str, out: Path | None, trials: int, timeout: float | None,
               pruner: str, progress: bool, device: Any, echo: Callable[[str], Any], model_block: dict[str, Any],
               recipe_epochs: int | None, confirm: int = 2) -> SearchResult:
    from harden.summary import human
    from harden.training.train_data import held_out_count

    t0 = time.perf_counter()
    before = counted(study)
    options = {k: v for k, v in cfg.as_dict().items()}
    echo(f"search: {model.spec}, {space.size()} candidates in {len(space.dimensions)} dimensions "
         f"({', '.join(d.name for d in space.dimensions)}); base {human(facts.macs)} MACs, {human(facts.params)} "
         f"parameters; budget {budget_text(budgets)}")
    for note in space.notes:
        echo(f"  not searched: {note}")
    if (note := ranking_note(cfg, space)) is not None:
        echo(f"  note: {note}")
    if before >= trials:
        echo(f"the study already holds {before} trials (--trials {trials}); raise --trials to run more")
    else:
        echo(f"study {redact(url)}: {before} of {trials} trials so far")
        objective = Objective(model, dataset, space, options, budgets=budgets, trials=trials, progress=progress,
                              device=device, echo=echo)
        study.optimize(objective, timeout=timeout, callbacks=[_stop_when_full(trials, echo)])
    attack = {"name": f"{cfg.val_attack}-{cfg.resolved_val_steps()}", "norm": cfg.norm, "eps": cfg.eps,
              "eps_text": str(_eps_text(cfg.eps)),
              "n": held_out_count(cfg.val_n, len(dataset)), "seed": cfg.seed,
              "data": f"{dataset.spec} (held-out training images)"}
    base = {"spec": model.spec, "macs": facts.macs, "params": facts.params,
            "feature_map": list(facts.feature_map) if facts.feature_map else None}
    info = {"name": STUDY_NAME, "storage": redact(url), "target_trials": trials, "pruner": pruner, "sampler": "TPE",
            "model": model.spec, "data": dataset.spec, "budgets": budgets, "finetune": _finetune_values(cfg),
            "seconds_this_run": round(time.perf_counter() - t0, 1)}
    result = collect(study, base, attack, space, info)
    pair_with_base(result.rows)
    if confirm > 0 and result.rows:
        result.verdict = confirm_candidates(result.rows, _second_seed_measure(model, dataset, options, device),
                                            top=confirm, echo=echo)
    result.recipe = best_recipe(result, model_block, dataset.spec, _finetune_values(cfg), epochs=recipe_epochs,
                                evaluate={**_EVALUATE, "eps": _eps_text(cfg.eps), "norm": cfg.norm},
                                prefix=_earlier_transforms(model))
    if result.recipe is not None and "weights" not in model_block and _has_own_weights(model):
        echo(f"note: best.yaml rebuilds {model.spec} from its spec; the search started from other weights "
             "(a harden file or trained weights), so set model.weights to a state dict of them before `harden run`")
    echo("")
    echo(table(result))
    if out is not None:
        echo("")
        write_outputs(out, result, echo)
    return result


def _import_optuna() -> Any:
    """Optuna, or one line saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise HardenError("harden search needs Optuna: pip install 'harden[search]' (or pip install optuna)") from None
    return optuna


def _check_held_out(val_n: Any, n_images: int) -> None:
    """Refuse data too small to hold any image out for validation."""
    from harden.training.train_data import held_out_count

    if held_out_count(val_n, n_images) < 1:
        raise UsageError(f"the {n_images} training images are too few to hold any out for validation")


def _remove_empty(created: list[Path]) -> None:
    """Remove the folders this call made for a study that could not open (holding at most its database)."""
    for path in created:
        if path.is_dir() and not any(p for p in path.iterdir() if p.name != DB_NAME):
            (path / DB_NAME).unlink(missing_ok=True)
            path.rmdir()


def _stop_when_full(trials: int, echo: Callable[[str], Any]) -> Callable[[Any, Any], None]:
    """An Optuna callback stopping the study once it holds ``trials`` or finds no new candidate."""
    def stop(study: Any, _trial: Any) -> None:
        if counted(study) >= trials:
            study.stop()
        elif exhausted(study):
            echo(f"the last {EXHAUSTED_AFTER} trials found no new candidate within the budget; stopping")
            study.stop()
    return stop


def _second_seed_measure(model: HardenedModel, dataset: ImageDataset, options: dict[str, Any],
                         device: Any) -> Callable[[list[str]], str]:
    """transforms -> the per-image robustness of ``model`` with them, fine-tuned with the next seed and measured on
    twice the held-out images (at most a third of the data)."""
    from harden.pipeline import apply
    from harden.training import finetune

    second = {**options, "seed": options["seed"] + 1, "val_n": min(2 * options["val_n"], len(dataset) // 3)}
    images = held_out_images(dataset, second)

    def measure(transforms: list[str]) -> str:
        candidate = apply(model, transforms) if transforms else model
        tuned = finetune(candidate, dataset, progress=False, device=device, curves=False, **second)
        return robust_outcome(tuned, images, second, device)

    return measure


def _earlier_transforms(model: HardenedModel) -> list[str]:
    """The transforms a harden file already carries, as strings best.yaml can apply again."""
    out = []
    for t in model.provenance.transforms:
        if t.from_source:  # part of the model the spec names: building it again applies it
            continue
        config = ",".join(f"{k}={'/'.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
                          for k, v in t.config.items() if v is not None)
        out.append(f"{t.name}:{config}" if config else t.name)
    return out


def ranking_note(cfg: Any, space: SearchSpace) -> str | None:
    """A word of caution when PGD ranks a space that holds smooth activations (which PGD overstates)."""
    if cfg.val_attack != "pgd" or not any(d.name == "activation" for d in space.dimensions):
        return None
    return (f"trials are ranked by PGD-{cfg.resolved_val_steps()}, which overstated smooth activations' robust "
            "accuracy by up to 15 points on Fashion-MNIST (README); --val-attack apgd-ce ranks by APGD-CE")


def _has_own_weights(model: HardenedModel) -> bool:
    prov = model.record_outside_training()
    return bool(prov.finetune or prov.trained_outside or prov.model.has_weights_file
                or any(not t.from_source for t in prov.transforms))
