"""Resumable state: a run's fingerprint, where it differs from a saved one, and files written atomically.

A run that can be interrupted saves its state (a fine-tuning checkpoint, an evaluation's progress,
the finished stages of ``harden run``) in a :class:`Store` together with a fingerprint of what it
computes. Resuming reads the state back and refuses it when the fingerprint :func:`differences`
from the current one, so a run never continues another run's work.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harden.errors import HardenError
from harden.runtime.atomic import atomic_path


def state_digest(model: nn.Module, *, short: bool = False) -> str:
    """SHA-256 of a model's state (names, shapes, dtypes, bytes): which weights a run started from.

    ``short`` gives the 16-character digest evaluation progress files record (the name, dtype and
    shape of each tensor hashed in that order), so progress files written before stay resumable.
    """
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        shape = tuple(t.shape)
        h.update((f"{name}{t.dtype}{shape}" if short else f"{name}:{shape}:{t.dtype}").encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16] if short else h.hexdigest()


def as_json(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists, keys strings): comparable with a saved one."""
    return json.loads(json.dumps(value))


def differences(old: Any, new: Any, *, depth: int | None = None, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted key, old value, new value)`` wherever two JSON-like values differ.

    Mappings are compared key by key (``old``'s keys first, then keys only ``new`` has), ``depth``
    levels deep (``None``: all the way); the key of a difference at the top is ``""``.
    """
    if isinstance(old, Mapping) and isinstance(new, Mapping) and depth != 0:
        out: list[tuple[str, Any, Any]] = []
        for key in [*old, *(k for k in new if k not in old)]:
            out += differences(old.get(key), new.get(key), depth=None if depth is None else depth - 1,
                               prefix=f"{prefix}.{key}" if prefix else str(key))
        return out
    return [] if old == new else [(prefix, old, new)]


def sibling_path(output: str | os.PathLike[str], suffix: str) -> Path:
    """The file beside ``output`` with its extension replaced by ``suffix`` (``m.safetensors`` -> ``m.ckpt.pt``)."""
    p = Path(output)
    stem = p.name[: -len(p.suffix)] if p.suffix else p.name
    return p.with_name(stem + suffix)


def checkpoint_path_for(output: str | os.PathLike[str]) -> Path:
    """Where the per-epoch checkpoint of a run writing ``output`` lives: ``OUT.ckpt.pt`` beside it."""
    return sibling_path(output, ".ckpt.pt")


@dataclass(frozen=True)
class Store:
    """One file of resumable state, as ``torch`` (tensors allowed) or ``json``, saved atomically.

    ``format`` is the value the payload's ``format`` key must have (``None``: not checked). The error
    texts are templates with ``{path}`` (and ``{reason}``): ``unreadable`` for a file that cannot be
    read or decoded, ``foreign`` for a readable file of another kind.
    """

    path: Path
    codec: str = "json"
    format: str | None = None
    unreadable: str = "'{path}' could not be read ({reason})"
    foreign: str = "'{path}' is not a file harden wrote"
    indent: int | None = None

    def exists(self) -> bool:
        """Whether the file is there."""
        return self.path.exists()

    def save(self, payload: Mapping[str, Any]) -> None:
        """Replace the file with ``payload`` in one rename."""
        with atomic_path(self.path) as tmp:
            if self.codec == "torch":
                torch.save(dict(payload), tmp)
            else:
                tmp.write_text(json.dumps(payload, indent=self.indent) + ("\n" if self.indent else ""))

    def load(self) -> dict[str, Any] | None:
        """The saved payload (``None`` when there is no file); an unreadable or foreign file is a HardenError."""
        try:
            if self.codec == "torch":
                state = torch.load(self.path, map_location="cpu", weights_only=True)
            else:
                state = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise self.damaged(exc) from exc
        if not isinstance(state, dict) or (self.format is not None and state.get("format") != self.format):
            raise HardenError(self.foreign.format(path=self.path))
        return state

    def damaged(self, exc: BaseException) -> HardenError:
        """The error for a file that cannot be read, or whose content is not what was saved."""
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        return HardenError(self.unreadable.format(path=self.path, reason=reason))

    def remove(self) -> None:
        """Delete the file (the run it belongs to has finished)."""
        self.path.unlink(missing_ok=True)
