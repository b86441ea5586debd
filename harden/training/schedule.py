"""The learning-rate schedules and the eps warm-up of fine-tuning (pure functions of the run's progress)."""

from __future__ import annotations

import math

from harden.schemas.finetune import FinetuneConfig


def lr_at(cfg: FinetuneConfig, progress: float) -> float:
    """Learning rate at ``progress`` in [0, 1] of the run (a pure function, so resuming needs no state).

    cosine: lr to 0; multistep: lr/10 at 50% and again at 75% (the seeds' 100/150 of 200 epochs);
    onecycle: linear up to lr at 40%, then down to 0 (Wong et al.); constant.
    """
    t = min(max(progress, 0.0), 1.0)
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * t))
    if cfg.schedule == "multistep":
        return cfg.lr * (0.1 ** (int(t >= 0.5) + int(t >= 0.75)))
    if cfg.schedule == "onecycle":
        peak = 0.4
        return cfg.lr * (t / peak if t < peak else max(0.0, (1 - t) / (1 - peak)))
    return cfg.lr


def eps_at(cfg: FinetuneConfig, epochs_done: float) -> float:
    """eps after ``epochs_done`` (fractional) epochs: ramped linearly over ``eps_warmup`` epochs."""
    if cfg.eps_warmup <= 0:
        return cfg.eps
    return cfg.eps * min(1.0, epochs_done / cfg.eps_warmup)
