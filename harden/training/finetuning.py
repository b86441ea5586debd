"""The fine-tuning run: :func:`finetune` checks its arguments, sets the run up, trains and records it."""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harden import tracking
from harden.data import ImageDataset
from harden.data.images import data_warning
from harden.errors import UsageError
from harden.methods import get_method
from harden.model import HardenedModel, warn_if_random
from harden.provenance import FinetuneEntry
from harden.runtime import events as ev
from harden.runtime.session import DistSession, session
from harden.runtime.stamp import device_text
from harden.runtime.store import checkpoint_path_for
from harden.schemas.finetune import FinetuneConfig, make_config
from harden.serialization import save
from harden.training.batchnorm import recalibrate_bn
from harden.training.checkpoint import RunState, checkpoint_store, load_for_resume, restore, run_fingerprint
from harden.training.collapse import first_collapse
from harden.training.curves import curves_path_for, write_curves
from harden.training.ema import EMA
from harden.training.epochs import RunParts, train_epochs
from harden.training.extra_data import ExtraData, Teacher, load_extra, load_teacher, teacher_name
from harden.training.train_data import TrainData, default_workers, held_out_count, resolve_data, split_indices
from harden.training.trainer import Trainer
from harden.training.uint8_images import decode_uint8


def finetune(model: HardenedModel, data: str | ImageDataset | Any, config: FinetuneConfig | None = None, *,
             output: str | os.PathLike[str] | None = None,
             resume: bool = False, force: bool = False, checkpoint: str | os.PathLike[str] | None = None,
             progress: bool = True, download: bool = False, device: str | torch.device | None = None,
             callback: Callable[[dict[str, Any]], None] | None = None, curves: bool = True,
             trust_code: bool = False, tracker: Any = None, **options: Any) -> HardenedModel:
    """Adversarially fine-tune a copy of ``model`` on the training split of ``data``; return it.

    ``data`` is a data spec (``split``, ``resize`` and ``crop`` shape how it is read), a harden ImageDataset,
    a torch ``Dataset`` or ``DataLoader``, or ``(x, y)`` tensors (see :func:`harden.data.as_image_dataset`).
    The settings are a :class:`FinetuneConfig`: ``config``, or harden's defaults, with keyword ``options``
    (its fields: ``method`` (any of ``harden.methods.method_names()``), ``eps``, ``steps``, ``epochs``, ``lr``,
    ``awp``, ``extra_data``, ``extra_fraction``, ...) in their place; ``pseudo_label`` (the
    teacher) may be a harden file (``trust_code`` as for :func:`harden.load`) or a module. With ``output`` the
    result is written as a harden safetensors file whose provenance gains a ``finetune`` entry, with a
    training-curve PNG beside it, and a checkpoint
    (``OUT.ckpt.pt``) is written after every epoch; ``resume=True`` continues from it. ``callback``
    is called after every epoch with that epoch's numbers. Under torchrun only rank 0 writes files.
    ``tracker`` (``"mlflow"``, ``"mlflow:URI"`` or a :class:`harden.tracking.Tracker`) records the settings,
    the per-epoch numbers and the output files (see :mod:`harden.tracking`).
    """
    if not isinstance(model, HardenedModel):
        raise UsageError("finetune() takes a model made by harden.load_model, harden.apply, harden.load or harden.wrap")
    teacher_arg = options.get("pseudo_label", config.pseudo_label if config is not None else None)
    if isinstance(teacher_arg, nn.Module):  # recorded by name; its digest goes into the fingerprint
        options["pseudo_label"] = teacher_name(teacher_arg)
    cfg = make_config(config, **options)
    output = Path(output) if output is not None else None
    ckpt_path = _checked_paths(output, checkpoint, resume=resume, force=force)
    dataset = resolve_data(data, model, download, split=cfg.split, resize=cfg.resize, crop=cfg.crop)
    teacher = load_teacher(teacher_arg, trust_code=trust_code) if teacher_arg is not None else None
    _note_held_out(cfg, len(dataset))
    with tracking.Session(tracker, run_name=output.stem if output else None) as tracked, session(device) as dist:
        events = ev.Events(tracking.TrackerSink(tracked), ev.Callbacks(on_epoch=callback),
                           ev.Terminal() if progress and dist.is_main else None)
        events.emit(ev.Record("settings", {"model": model.spec,
                                           "data": dataset.spec, **cfg.as_dict()}))
        result = _run(model, dataset, cfg, output=output, ckpt_path=ckpt_path, resume=resume, dist=dist,
                      events=events, curves=curves, teacher=teacher, download=download)
        _report_kept(events, result, output)
    return result


def _note_held_out(cfg: FinetuneConfig, n: int) -> None:
    """Say so when ``val_n`` is more than small data can spare and a tenth of it is held out instead."""
    held = held_out_count(cfg.val_n, n)
    if held != cfg.val_n:
        data_warning(f"--val-n {cfg.val_n} is more than a third of the {n} training images: holding out {held} "
                     "(a tenth) for validation")


def _checked_paths(output: Path | None, checkpoint: str | os.PathLike[str] | None, *, resume: bool,
                   force: bool) -> Path | None:
    """The checkpoint's path, after refusing outputs and checkpoints that the run must not overwrite."""
    ckpt_path = Path(checkpoint) if checkpoint is not None else (checkpoint_path_for(output) if output else None)
    if resume and ckpt_path is None:
        raise UsageError("resume needs the output path (its checkpoint is OUT.ckpt.pt)")
    if resume and not ckpt_path.exists():  # type: ignore[union-attr]
        raise UsageError(f"nothing to resume: no checkpoint at '{ckpt_path}'")
    if output is not None and output.exists() and not (force or resume):
        raise UsageError(f"'{output}' exists; pass --force to overwrite it")
    if output is not None and output.is_dir():
        raise UsageError(f"'{output}' is a directory; give a file name such as model.safetensors")
    if ckpt_path is not None and ckpt_path.exists() and not resume and not force:
        raise UsageError(f"a checkpoint of an unfinished run exists at '{ckpt_path}'; pass --resume to continue it "
                         "or --force to start over")
    return ckpt_path


def _report_kept(events: ev.Events, result: HardenedModel, output: Path | None) -> None:
    """Tell the trackers the kept epoch's validation numbers and the files written."""
    val = result.provenance.finetune.validation
    events.emit(ev.Record("figures", {f"kept_{k}": v for k, v in (("clean_acc", val.clean_acc),
                                                                  ("robust_acc", val.robust_acc))
                                      if v is not None}))
    events.emit(ev.ArtifactWritten(output))
    events.emit(ev.ArtifactWritten(curves_path_for(output) if output else None))


def _extra_source(cfg: FinetuneConfig, dataset: ImageDataset, data: TrainData, teacher: Teacher | None, *,
                  device: torch.device, dist: DistSession, workers: int, download: bool) -> ExtraData | None:
    """The run's extra data (checked, pseudo-labelled), or None without ``extra_data``."""
    if not cfg.extra_data:
        return None
    assert cfg.extra_fraction is not None
    return load_extra(cfg.extra_data, dataset, data.image_shape, fraction=cfg.extra_fraction,
                      batch_size=cfg.batch_size, seed=cfg.seed, rank=dist.rank, world=dist.world, device=device,
                      workers=workers, teacher=teacher, download=download, resize=cfg.resize, crop=cfg.crop)


def _run(model: HardenedModel, dataset: ImageDataset, cfg: FinetuneConfig, *, output: Path | None,
         ckpt_path: Path | None, resume: bool, dist: DistSession, events: ev.Events, curves: bool,
         teacher: Teacher | None = None, download: bool = False) -> HardenedModel:
    start_time = time.perf_counter()
    fingerprint = run_fingerprint(model, dataset, cfg, world=dist.world, teacher=teacher)
    store = checkpoint_store(ckpt_path) if ckpt_path is not None else None
    ckpt = load_for_resume(store, ckpt_path, fingerprint) if resume else None
    run, counts = _set_up(model, dataset, cfg, dist=dist, events=events, teacher=teacher, download=download)
    state = restore(run.trainer, ckpt, dist.device) if ckpt is not None else _fresh_state(run)
    start_time -= sum(h.get("seconds", 0.0) for h in state.history)  # a resumed run counts its earlier epochs
    if dist.is_main and ckpt is None:  # every setting checked: the run starts
        warn_if_random(model, "fine-tuning")
    stopped_early = train_epochs(run, state, store=store, fingerprint=fingerprint, ckpt_path=ckpt_path)
    result, kept_epoch = _kept_model(model, run.trainer, state, cfg)
    entry = _finetune_entry(run, state, dataset, counts, kept_epoch=kept_epoch, stopped_early=stopped_early,
                            start_time=start_time)
    result.provenance.record_finetune(FinetuneEntry.from_dict(entry, "finetune"))
    if dist.is_main and output is not None:
        save(result, output, overwrite=True)
        if curves and state.history:
            write_curves(curves_path_for(output), state.history, best_epoch=kept_epoch,
                         title=f"{result.spec}: {cfg.method} eps {cfg.eps * 255:.3g}/255")
        if store is not None:
            store.remove()
    dist.barrier()
    return result


def _set_up(model: HardenedModel, dataset: ImageDataset, cfg: FinetuneConfig, *, dist: DistSession,
            events: ev.Events, teacher: Teacher | None, download: bool) -> tuple[RunParts, dict[str, int]]:
    """The run's parts (a trainer on a copy of ``model``, the split data, the extra data) and the data's counts."""
    device = dist.device
    workers = default_workers() if cfg.workers is None else cfg.workers
    work = copy.deepcopy(model)
    val_idx, train_idx = split_indices(len(dataset), cfg)
    skipped: list[str] = []
    if cfg.skip_bad_images:  # leave damaged images out of both sets, and count them in the entry
        val_idx, bad_val = dataset.readable(val_idx)
        train_idx, bad_train = dataset.readable(train_idx)
        skipped = bad_val + bad_train
    data = TrainData(dataset, train_idx, batch_size=cfg.batch_size - cfg.extra_per_batch(), device=device, dist=dist,
                     seed=cfg.seed, workers=workers, cache_limit_gb=cfg.cache_limit_gb)
    if len(data.order(0)) < 2:
        raise UsageError(f"only {len(train_idx)} training examples per process; use more data")
    extra = _extra_source(cfg, dataset, data, teacher, device=device, dist=dist, workers=workers, download=download)
    run = RunParts(cfg, dist, events, trainer=None, data=data, extra=extra)  # type: ignore[arg-type]
    if val_idx:
        xv, yv = decode_uint8(dataset, val_idx, workers)
        run.x_val, run.y_val = xv.to(device), yv.to(device)
    run.trainer = Trainer(work, cfg, device=device, dist=dist)
    return run, {"train_n": len(train_idx), "val_n": len(val_idx), "skipped": len(skipped)}


def _fresh_state(run: RunParts) -> RunState:
    """The state of a run that starts now: batch norm recalibrated on clean images (and the EMA restarted)."""
    cfg, trainer = run.cfg, run.trainer
    state = RunState()
    if cfg.bn_recalib:
        state.bn_seen = recalibrate_bn(trainer.model, run.data.clean_batches(cfg.bn_recalib_n))
        if trainer.ema is not None:
            trainer.ema = EMA(trainer.model, cfg.ema_decay)
    return state


def _kept_model(model: HardenedModel, trainer: Trainer, state: RunState, cfg: FinetuneConfig
                ) -> tuple[HardenedModel, int]:
    """A copy of ``model`` with the kept weights (on the CPU in fp32 and the default layout), and their epoch."""
    final = trainer.eval_model()
    kept_epoch = state.history[-1]["epoch"] if state.history else 0
    stopped_by_guard = cfg.on_collapse == "stop" and first_collapse(state.history) is not None
    if (cfg.keep == "best" or stopped_by_guard) and state.best.get("state") is not None:
        final.load_state_dict(state.best["state"])
        kept_epoch = int(state.best["epoch"])
    result = copy.deepcopy(model)
    result.load_state_dict({k: v.detach().cpu() for k, v in final.state_dict().items()})
    result.eval()
    return result, kept_epoch


def _method_fields(cfg: FinetuneConfig) -> dict[str, Any]:
    """The provenance entry's description of the training method."""
    method = get_method(cfg.method)
    return {
        "method": cfg.method,
        "norm": cfg.norm,
        "eps": cfg.eps,
        "steps": method.steps(cfg.steps),
        "step_size": cfg.resolved_step_size(),
        "beta": cfg.beta if method.uses_beta else None,
        **method.recorded_settings(cfg.method_options()),
        "awp": ({"gamma": cfg.awp, "warmup": cfg.resolved_awp_warmup(), "paper": "Wu et al. 2020"}
                if cfg.awp > 0 else None),
    }


def _finetune_entry(run: RunParts, state: RunState, dataset: ImageDataset, counts: dict[str, int], *,
                    kept_epoch: int, stopped_early: bool, start_time: float) -> dict[str, Any]:
    """The ``finetune`` entry the result's provenance records."""
    cfg, history = run.cfg, state.history
    kept = next((h for h in history if h["epoch"] == kept_epoch), history[-1] if history else {})
    return {
        **_method_fields(cfg),
        "extra_data": run.extra.info if run.extra is not None else None,
        "epochs": cfg.epochs,
        "epochs_run": len(history),
        "stopped_early": stopped_early,
        "kept": cfg.keep,
        "kept_epoch": kept_epoch,
        "lr": cfg.lr,
        "schedule": cfg.schedule,
        "batch_size": cfg.batch_size,
        "world_size": run.dist.world,
        "weight_decay": cfg.weight_decay,
        "momentum": cfg.momentum,
        "ema": cfg.ema_decay if cfg.ema else None,
        "label_smoothing": cfg.label_smoothing,
        "eps_warmup": cfg.eps_warmup,
        "attack_mode": cfg.attack_mode,
        "bn_recalibrated_on": state.bn_seen,
        "augment": cfg.augment != "none",
        "augmentation": cfg.augment,
        "lipschitz_reg": cfg.lipschitz_reg or None,
        "precision": "bf16" if run.trainer.bf16 else "fp32",
        "seed": cfg.seed,
        "data": dataset.spec,
        "train_n": counts["train_n"],
        "skipped_images": counts["skipped"],
        "validation": {"n": counts["val_n"], "attack": f"{cfg.val_attack}-{cfg.resolved_val_steps()}",
                       "eps": cfg.eps, "norm": cfg.norm,
                       "clean_acc": kept.get("val_clean"), "robust_acc": kept.get("val_robust")},
        "history": history,
        "collapse": ({**first_collapse(history), "action": cfg.on_collapse}  # type: ignore[dict-item]
                     if first_collapse(history) else None),
        "seconds": round(time.perf_counter() - start_time, 2),
        "device": device_text(run.dist.device, detail=False),
    }
