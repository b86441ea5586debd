"""The training-curve PNG written beside a fine-tuned model (``OUT.curves.png``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harden.runtime.atomic import save_figure
from harden.runtime.store import sibling_path


def curves_path_for(output: str | os.PathLike[str]) -> Path:
    """Where the training-curve PNG of a run writing ``output`` goes: ``OUT.curves.png``."""
    return sibling_path(output, ".curves.png")


def write_curves(path: str | os.PathLike[str], history: Sequence[dict[str, Any]], *, title: str = "",
                 best_epoch: int | None = None) -> Path:
    """A PNG with the training loss and the validation clean/robust accuracy per epoch."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(9, 3.6), dpi=100)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(epochs, [h["loss"] for h in history], marker="o", label="train loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.grid(alpha=0.3)
    ax1.legend()
    if any(h.get("val_clean") is not None for h in history):
        ax2.plot(epochs, [h["val_clean"] for h in history], marker="o", label="val clean")
        ax2.plot(epochs, [h["val_robust"] for h in history], marker="o", label="val PGD")
    ax2.plot(epochs, [h["train_acc"] for h in history], marker=".", linestyle=":", label="train (attacked)")
    if best_epoch is not None:
        ax2.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label=f"kept (epoch {best_epoch})")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy (%)")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
