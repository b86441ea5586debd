"""The epoch loop of fine-tuning: train on every batch, validate, keep the best weights, checkpoint."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harden.errors import HardenError, HardenWarning
from harden.methods import get_method
from harden.runtime import events as ev
from harden.runtime.session import DistSession
from harden.runtime.store import Store
from harden.schemas.finetune import FinetuneConfig
from harden.training import schedule
from harden.training.checkpoint import RunState, checkpoint_payload
from harden.training.collapse import collapse_message, collapse_of, first_collapse
from harden.training.extra_data import ExtraData
from harden.training.train_data import TrainData
from harden.training.trainer import Trainer


class NonFiniteLoss(HardenError):
    """The training loss became NaN or infinite."""


@dataclass
class RunParts:
    """What the epochs of one run train with: settings, trainer, data, the validation slice and the reporting."""

    cfg: FinetuneConfig
    dist: DistSession
    events: ev.Events
    trainer: Trainer
    data: TrainData
    extra: ExtraData | None
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.iters = len(self.data)


def train_epochs(run: RunParts, state: RunState, *, store: Store | None, fingerprint: dict[str, Any],
                 ckpt_path: Path | None) -> bool:
    """Train the epochs from ``state.start_epoch`` on; whether patience stopped the run early."""
    cfg = run.cfg
    for epoch in range(state.start_epoch, cfg.epochs):
        if cfg.patience is not None and state.bad_epochs >= cfg.patience:
            return True
        if cfg.on_collapse == "stop" and first_collapse(state.history):  # a resumed run that the guard stopped
            return True
        run.trainer.reseed(epoch)
        t0 = time.perf_counter()
        entry = _train_epoch(run, state, epoch, ckpt_path)
        if run.x_val is not None and run.y_val is not None:
            _validate_and_keep(run, state, entry, epoch)
            _guard(run, state, entry)
        entry["seconds"] = round(time.perf_counter() - t0, 3)
        run.events.emit(ev.ProgressEnded())
        state.history.append(entry)
        if store is not None and run.dist.is_main:
            store.save(checkpoint_payload(fingerprint, epoch + 1, run.trainer, state))
        run.events.emit(ev.Record("epoch", dict(entry)))
        if entry.get("collapse") and cfg.on_collapse == "stop":
            return True
    return False


def _val_count(run: RunParts) -> int | None:
    """How many held-out images validate each epoch (all processes together)."""
    return None if run.x_val is None else int(run.x_val.shape[0])


def _guard(run: RunParts, state: RunState, entry: dict[str, Any]) -> None:
    """Mark a catastrophic-overfitting epoch in ``entry`` and say so once (see :mod:`harden.training.collapse`)."""
    if not run.trainer.method.attacks or run.cfg.on_collapse == "ignore" or first_collapse(state.history):
        return
    found = collapse_of(state.history, entry, n=_val_count(run))
    if found is None:
        return
    entry["collapse"] = found
    if run.dist.is_main:
        warnings.warn(collapse_message(found, run.cfg.on_collapse), HardenWarning, stacklevel=2)


def _train_epoch(run: RunParts, state: RunState, epoch: int, ckpt_path: Path | None) -> dict[str, Any]:
    """One pass over this epoch's batches; the epoch's history entry (validation still to come)."""
    cfg, dist, iters = run.cfg, run.dist, run.iters
    device = dist.device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.float64, device=device)
    seen = 0
    run.events.emit(ev.ProgressStarted(iters, f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", keep=True))
    eps_now = cfg.eps
    for i, (xb, yb) in enumerate(run.data.batches(epoch)):
        if run.extra is not None:  # the same share of extra examples in every batch
            xe, ye = run.extra.take(epoch * iters + i)
            xb, yb = torch.cat([xb, xe]), torch.cat([yb, ye])
        eps_now = schedule.eps_at(cfg, epoch + (i + 1) / iters)
        lr = schedule.lr_at(cfg, (epoch * iters + i) / (cfg.epochs * iters))
        loss_b, correct_b = run.trainer.train_step(xb, yb, eps=eps_now, lr=lr)
        loss_sum += loss_b
        correct += correct_b
        seen += yb.shape[0]
        shown = None
        if (i + 1) % cfg.log_every == 0 or i + 1 == iters:
            flag = torch.tensor([0.0 if torch.isfinite(loss_sum) else 1.0], device=device)
            if dist.all_sum(flag).item() > 0:
                run.events.emit(ev.ProgressEnded())
                raise NonFiniteLoss(_nonfinite_message(epoch, i, ckpt_path, state.start_epoch, state.history))
            shown = _step_status(cfg, loss_sum.item(), correct.item(), seen, lr=lr, eps=eps_now)
        run.events.emit(ev.ProgressMade(1, status=shown))
    totals = dist.all_sum(torch.stack([loss_sum, correct, torch.tensor(float(seen), dtype=torch.float64,
                                                                       device=device)]))
    return {
        "epoch": epoch + 1, "loss": totals[0].item() / totals[2].item(),
        "train_acc": 100 * totals[1].item() / totals[2].item(), "lr": schedule.lr_at(cfg, (epoch + 1) / cfg.epochs),
        "eps": eps_now, "val_clean": None, "val_robust": None,
    }


def _step_status(cfg: FinetuneConfig, loss_sum: float, correct: float, seen: int, *, lr: float, eps: float
                 ) -> dict[str, str]:
    """The numbers the progress bar shows while an epoch trains (running means over ``seen`` examples)."""
    shown = {"loss": f"{loss_sum / seen:.3f}", "acc": f"{100 * correct / seen:.1f}%", "lr": f"{lr:.3g}"}
    if get_method(cfg.method).attacks:  # the eps schedule matters only to methods that attack
        shown["eps"] = f"{eps * 255:.2f}/255"
    return shown


def _validate_and_keep(run: RunParts, state: RunState, entry: dict[str, Any], epoch: int) -> None:
    """Validate the epoch's weights into ``entry``; keep them as the best when they score higher."""
    assert run.x_val is not None and run.y_val is not None
    trainer = run.trainer
    entry["val_clean"], entry["val_robust"] = trainer.validate(run.x_val, run.y_val)
    run.events.emit(ev.ProgressMade(0, status={"loss": f"{entry['loss']:.3f}",
                                               "clean": f"{entry['val_clean']:.1f}%",
                                               "robust": f"{entry['val_robust']:.1f}%"}))
    score = entry["val_robust"] if run.trainer.method.attacks else entry["val_clean"]
    if score > state.best["score"]:
        state.best = {"epoch": epoch + 1, "score": score, "clean": entry["val_clean"], "robust": entry["val_robust"],
                      "state": {k: v.detach().clone() for k, v in trainer.eval_model().state_dict().items()}}
        state.bad_epochs = 0
    else:
        state.bad_epochs += 1


def _nonfinite_message(epoch: int, step: int, ckpt_path: Path | None, start_epoch: int,
                       history: list[dict[str, Any]]) -> str:
    where = f"the training loss became non-finite in epoch {epoch + 1} (by step {step + 1}); stopped"
    if ckpt_path is not None and history:
        return (f"{where}. The last good checkpoint is '{ckpt_path}' (after epoch {history[-1]['epoch']}); "
                "lower --lr (or check the data) and continue with --resume, or start over with --force")
    return f"{where} before any checkpoint was written; lower --lr or check the data"



