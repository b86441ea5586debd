"""Saving and loading hardened models as self-describing safetensors files.

The weights are the model's state dict; the metadata holds the provenance (``harden.provenance``,
see :mod:`harden.provenance`) and the reports of evaluations (``harden.reports``) as JSON. Files
written by harden 0.1.0 keep their provenance under ``harden.recipe`` and still load. Loading never
runs code named in a file: a provenance whose base model is a user factory is refused unless the
caller opts in with ``trust_code``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harden.errors import HardenError, UsageError
from harden.model import HardenedModel
from harden.pipeline import rebuild
from harden.provenance import Provenance, ProvenanceError, UnknownFormatError
from harden.runtime.atomic import atomic_path
from harden.runtime.stamp import versions

PROVENANCE_KEY = "harden.provenance"
LEGACY_PROVENANCE_KEY = "harden.recipe"  # where harden 0.1.0 stored it
REPORTS_KEY = "harden.reports"


def _state_for_saving(model: nn.Module) -> dict[str, torch.Tensor]:
    seen: dict[int, str] = {}
    out = {}
    for key, tensor in model.state_dict().items():
        t = tensor.detach().cpu()
        ptr = t.untyped_storage().data_ptr() if t.numel() else None
        # safetensors refuses shared storage: store a private contiguous copy of each tensor
        if ptr is not None and ptr in seen or not t.is_contiguous():
            t = t.clone().contiguous()
        elif ptr is not None:
            seen[ptr] = key
        out[key] = t
    return out


def save(model: HardenedModel, path: str | os.PathLike[str], *, overwrite: bool = True,
         reports: list[dict[str, Any]] | None = None) -> Path:
    """Write ``model`` (weights + provenance + reports) to ``path`` atomically."""
    from safetensors.torch import save_file

    if not isinstance(model, HardenedModel):
        raise UsageError("save() takes a model made by harden.load_model / harden.apply / harden.load")
    metadata = {PROVENANCE_KEY: model.record_outside_training().stamped(versions()).to_json()}
    all_reports = list(getattr(model, "reports", []) or []) if reports is None else reports
    if all_reports:
        metadata[REPORTS_KEY] = json.dumps(all_reports, sort_keys=True)
    tensors = _state_for_saving(model)
    with atomic_path(path, overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The raw safetensors metadata of ``path``, with clear errors for missing or foreign files."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.exists():
        raise UsageError(f"'{path}' does not exist")
    if path.suffix in (".pt", ".pth", ".bin", ".ckpt"):
        raise UsageError(f"'{path}' is a torch checkpoint, not a harden safetensors file; "
                         f"load it with --model SPEC --weights {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise HardenError(f"'{path}' is not a readable safetensors file ({str(exc)[:120]}); "
                          "it may be truncated or of another format") from exc


def _provenance_text(meta: dict[str, str]) -> str | None:
    """The stored provenance JSON of a file's metadata: the current key, else the one harden 0.1.0 wrote."""
    return meta.get(PROVENANCE_KEY, meta.get(LEGACY_PROVENANCE_KEY))


def read_provenance(path: str | os.PathLike[str]) -> Provenance:
    """The provenance stored in a harden safetensors file, checked field by field."""
    text = _provenance_text(read_metadata(path))
    if text is None:
        raise UsageError(f"'{path}' is a plain safetensors file without a harden recipe; "
                         f"load it with --model SPEC --weights {path}")
    try:
        return Provenance.from_json(text)
    except UnknownFormatError as exc:
        raise HardenError(f"'{path}' has an {exc}") from None
    except ProvenanceError as exc:
        raise HardenError(f"'{path}' has a damaged harden recipe ({str(exc)[:160]})") from exc


def read_reports(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Evaluation reports stored in a harden safetensors file (possibly empty)."""
    meta = read_metadata(path)
    try:
        reports = json.loads(meta.get(REPORTS_KEY, "[]"))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise HardenError(f"'{path}' has damaged stored reports ({str(exc)[:120]})") from exc
    if not isinstance(reports, list) or not all(isinstance(r, dict) for r in reports):
        raise HardenError(f"'{path}' has damaged stored reports (not a list of reports)")
    return reports


def _rebuild_stored(path: str | os.PathLike[str], provenance: Provenance, *, trust_code: bool,
                    base: nn.Module | None) -> HardenedModel:
    """The model a stored provenance describes; one that cannot be replayed is a damaged file, not a crash."""
    try:
        return rebuild(provenance, trust_code=trust_code, base=base)
    except HardenError:
        raise
    except Exception as exc:  # a field of the wrong type or shape: the file was altered or damaged
        detail = str(exc).splitlines()[0][:120] if str(exc) else ""
        raise HardenError(f"'{path}' has a damaged harden recipe that cannot be rebuilt "
                          f"({type(exc).__name__}: {detail}); write the file again with harden") from exc


def _check_shapes(path: str | os.PathLike[str], model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    expected = model.state_dict()
    wrong = [k for k, t in state.items() if k in expected and tuple(t.shape) != tuple(expected[k].shape)]
    if wrong:
        k = wrong[0]
        raise HardenError(f"'{path}' does not match its own recipe: {len(wrong)} tensors have the wrong shape "
                          f"({k}: {tuple(state[k].shape)} in the file, {tuple(expected[k].shape)} in the model); "
                          "the file was altered or comes from an incompatible harden version")


def load(path: str | os.PathLike[str], *, trust_code: bool = False, base: nn.Module | None = None,
         map_location: str | torch.device = "cpu") -> HardenedModel:
    """Rebuild the model stored at ``path`` from its provenance and load its weights strictly."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    model = _rebuild_stored(path, read_provenance(path), trust_code=trust_code, base=base)
    try:
        state = load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as exc:
        raise HardenError(f"'{path}' could not be read ({str(exc)[:120]}); it may be truncated") from exc
    _check_shapes(path, model, state)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise HardenError(
            f"'{path}' does not match its own recipe: {len(result.missing_keys)} missing keys "
            f"({', '.join(result.missing_keys[:3])}), {len(result.unexpected_keys)} unexpected "
            f"({', '.join(result.unexpected_keys[:3])}); the file may come from an incompatible harden version"
        )
    model.reports = read_reports(path)
    model.remember_untrained()
    model.eval()
    return model


def add_report(path: str | os.PathLike[str], report: dict[str, Any]) -> None:
    """Append ``report`` to the reports stored in ``path``, rewriting the file atomically."""
    from safetensors.torch import load_file, save_file

    meta = read_metadata(path)
    if _provenance_text(meta) is None:
        raise UsageError(f"'{path}' is not a harden model file; reports can only be stored in one")
    reports = read_reports(path)
    reports.append(report)
    meta[REPORTS_KEY] = json.dumps(reports, sort_keys=True)
    tensors = load_file(str(path))
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
