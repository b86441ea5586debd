"""The per-epoch checkpoint of fine-tuning: the run's fingerprint, the payload, and resuming from it.

A checkpoint (``OUT.ckpt.pt``, written through :class:`harden.runtime.store.Store`) holds the weights,
the optimizer, the EMA and Lipschitz states, the epoch history and the best epoch so far, with a
fingerprint of the model, data and settings that a resumed run must match.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harden.data import ImageDataset
from harden.errors import HardenError, UsageError
from harden.model import HardenedModel
from harden.runtime.store import Store, as_json, differences, state_digest
from harden.schemas.finetune import FinetuneConfig
from harden.training.extra_data import Teacher
from harden.training.trainer import Trainer

CHECKPOINT_FORMAT = "harden.checkpoint/1"

# Settings that change how a run computes but not what it computes: a resumed run may change them.
NOT_FINGERPRINTED = ("compile", "workers", "log_every", "cache_limit_gb")
#: settings added after checkpoints were first written, left out of the fingerprint at these values, so that a
#: checkpoint an older harden wrote resumes when they are left as they were
ADDED_DEFAULTS: dict[str, Any] = {"val_attack": "pgd"}


def _no_best() -> dict[str, Any]:
    return {"epoch": None, "score": -1.0, "clean": None, "robust": None, "state": None}


@dataclass
class RunState:
    """What carries over from epoch to epoch (and through a checkpoint) besides the trainer's own state."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=_no_best)
    start_epoch: int = 0
    bad_epochs: int = 0
    bn_seen: int = 0


def _provenance_for_fingerprint(model: HardenedModel) -> dict[str, Any]:
    return model.provenance.without_versions().to_dict()



def run_fingerprint(model: HardenedModel, dataset: ImageDataset, cfg: FinetuneConfig, *, world: int,
                    teacher: Teacher | None) -> dict[str, Any]:
    """What a resumed run must share with the checkpoint's run: recipe, starting weights, data and settings."""
    fingerprint = {
        "recipe": _provenance_for_fingerprint(model),  # the key checkpoints of 0.1.0 hold
        "weights": state_digest(model),
        "data": dataset.spec,
        "config": fingerprinted_config(cfg),
        "world_size": world,
    }
    if teacher is not None:
        fingerprint["teacher"] = teacher.digest
    return fingerprint


def fingerprinted_config(cfg: FinetuneConfig) -> dict[str, Any]:
    """The settings a resumed run (or search study) must share with the one that wrote the checkpoint."""
    config = {k: v for k, v in cfg.as_dict().items()
              if k not in NOT_FINGERPRINTED and not (k in ADDED_DEFAULTS and v == ADDED_DEFAULTS[k])}
    config["val_steps"] = cfg.resolved_val_steps()  # as older checkpoints hold it (10 then, None now)
    return config


def checkpoint_store(path: Path) -> Store:
    """The per-epoch checkpoint of a fine-tuning run (a torch file holding tensors and the run's fingerprint)."""
    return Store(path, codec="torch", format=CHECKPOINT_FORMAT,
                 unreadable="checkpoint '{path}' could not be read ({reason}); it may be damaged: "
                            "start over with --force",
                 foreign="'{path}' is not a harden fine-tuning checkpoint")


def fingerprint_diff(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between a checkpoint's fingerprint and this run's, in words (each setting by name)."""
    diffs = []
    for key, a, b in sorted(differences(saved, current, depth=1), key=lambda d: d[0]):
        if key == "config" and isinstance(a, dict) and isinstance(b, dict):
            diffs += [f"{k} ({x!r} -> {y!r})" for k, x, y in sorted(differences(a, b, depth=1), key=lambda d: d[0])]
        else:
            diffs.append({"recipe": "model recipe", "weights": "starting weights", "data": "data"}.get(key, key)
                         + (f" ({a!r} -> {b!r})" if key == "data" else ""))
    return diffs


def load_for_resume(store: Store | None, ckpt_path: Path | None, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint to resume from, refused when it comes from a run with another fingerprint."""
    assert store is not None
    ckpt = store.load()
    if ckpt is None:
        raise UsageError(f"nothing to resume: no checkpoint at '{ckpt_path}'")
    diffs = fingerprint_diff(json.loads(ckpt["fingerprint"]), as_json(fingerprint))
    if diffs:
        raise HardenError(f"checkpoint '{ckpt_path}' comes from a different run: {'; '.join(diffs[:6])}; "
                          "resume with the same model, data and settings, or start over with --force")
    return ckpt


def restore(trainer: Trainer, ckpt: dict[str, Any], device: torch.device) -> RunState:
    """Put the checkpoint's weights and optimizer (and EMA, Lipschitz) state into ``trainer``; the run's state."""
    trainer.model.load_state_dict(ckpt["model"])
    trainer.optimizer.load_state_dict(ckpt["optimizer"])
    if trainer.ema is not None and ckpt.get("ema") is not None:
        trainer.ema.load_state_dict(ckpt["ema"])
    if trainer.penalty is not None and ckpt.get("lipschitz") is not None:
        trainer.penalty.load_state_dict(ckpt["lipschitz"])
    best = dict(ckpt["best"])
    if best.get("state") is not None:
        best["state"] = {k: v.to(device) for k, v in best["state"].items()}
    return RunState(history=list(json.loads(ckpt["history"])), best=best, start_epoch=int(ckpt["epoch"]),
                    bad_epochs=int(ckpt["bad_epochs"]), bn_seen=int(ckpt["bn_seen"]))


def checkpoint_payload(fingerprint: dict[str, Any], epoch: int, trainer: Trainer, state: RunState) -> dict[str, Any]:
    """What the checkpoint written after ``epoch`` (counted from 1) holds."""
    best = state.best
    return {
        "format": CHECKPOINT_FORMAT,
        "fingerprint": json.dumps(fingerprint, sort_keys=True),
        "epoch": epoch,
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "ema": trainer.ema.state_dict() if trainer.ema is not None else None,
        "lipschitz": trainer.penalty.state_dict() if trainer.penalty is not None else None,
        "best": {**best, "state": ({k: v.cpu() for k, v in best["state"].items()}
                                   if best.get("state") is not None else None)},
        "history": json.dumps(state.history),
        "bad_epochs": state.bad_epochs,
        "bn_seen": state.bn_seen,
    }
