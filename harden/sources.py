"""Model sources: where a base network comes from (timm, torchvision, a user's factory, ...).

A model spec is ``NAME`` (timm first, then torchvision), ``SOURCE:NAME`` for a registered source
(``timm:``, ``tv:``, ``cifar:``, ``robustbench:``), or ``package.module:factory`` for a user's own
model. The registry is :mod:`harden.source_registry`; importing this module registers the built-in
sources (:mod:`harden.library_sources`, then the zoo's).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harden import library_sources, zoo  # noqa: F401  (importing them registers the built-in sources, in this order)
from harden.errors import HardenError, UsageError, close_matches
from harden.library_sources import timm_kwargs_for_size
from harden.model import IMAGENET_MEAN, IMAGENET_STD, HardenedModel
from harden.provenance import ModelEntry, Provenance
from harden.source_registry import BuiltNet, ModelSource, register_model_source, registered_sources

__all__ = ["BuiltNet", "ModelSource", "build_net", "load_model", "load_weights_into", "model_sources", "parse_spec",
           "read_state_dict", "register_model_source"]


def model_sources() -> dict[str, ModelSource]:
    """All registered model sources, by prefix."""
    return registered_sources()


# ------------------------------------------------------------------------------------------- specs


def parse_spec(spec: str) -> tuple[str, str]:
    """Split a model spec into ``(source, name)``; a bare name resolves to timm, then torchvision."""
    sources = model_sources()
    spec = spec.strip()
    if not spec:
        raise UsageError("empty model spec")
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in sources and prefix != "import":
        return prefix, rest
    if sep:
        return "import", spec
    if sources["timm"].has(spec):
        return "timm", spec
    if sources["tv"].has(spec):
        return "tv", spec
    known = list(sources["timm"].names()) + [f"tv:{n}" for n in sources["tv"].names()]
    for src_name, src in sources.items():
        if src_name not in ("timm", "tv", "import"):
            if src.has(spec):
                return src_name, spec
            known += [f"{src_name}:{n}" for n in src.names()]
    raise UsageError(f"unknown model '{spec}'{close_matches(spec, known)}")


def _size3(input_size: int | Sequence[int] | None) -> tuple[int, int, int] | None:
    if input_size is None:
        return None
    if isinstance(input_size, int):
        size = (3, input_size, input_size)
    else:
        size = tuple(int(v) for v in input_size)
        if len(size) == 2:
            size = (3, *size)
    if len(size) != 3 or min(size) <= 0:
        raise UsageError(f"input size must be a positive side, (H, W) or (C, H, W), got {input_size!r}")
    return size  # type: ignore[return-value]


def build_net(source: str, name: str, *, num_classes: int | None, pretrained: bool = False,
              kwargs: dict[str, Any] | None = None, trust_code: bool = True) -> BuiltNet:
    """Build the base network of ``source:name`` (no normalization, no transforms)."""
    sources = model_sources()
    if source not in sources:
        raise UsageError(f"unknown model source '{source}'{close_matches(source, sources)}")
    src = sources[source]
    if src.runs_user_code and not trust_code:
        raise HardenError(
            f"this recipe builds its base model by running user code ('{name}'); "
            "pass --trust-code (or trust_code=True) if you trust where the file came from"
        )
    return src.build(name, num_classes, pretrained, dict(kwargs or {}))


def load_model(spec: str, num_classes: int | None = None, pretrained: bool = False,
               weights: str | os.PathLike[str] | None = None, *,
               input_size: int | Sequence[int] | None = None,
               mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
               model_kwargs: dict[str, Any] | None = None) -> HardenedModel:
    """Build ``spec`` as a :class:`HardenedModel` taking images in [0, 1].

    ``weights`` is a state dict file (``.safetensors``, ``.pt``, ``.pth``) for the base network;
    ``pretrained`` asks the model's library for its own weights (needs network or a local cache).
    """
    if num_classes is not None and num_classes <= 0:
        raise UsageError(f"--num-classes must be positive, got {num_classes}")
    source, name = parse_spec(spec)
    size = _size3(input_size)
    kwargs = dict(model_kwargs or {})
    if source == "timm":
        kwargs = {**timm_kwargs_for_size(name, size), **kwargs}
    built = build_net(source, name, num_classes=num_classes, pretrained=pretrained, kwargs=kwargs)
    net = built.net
    if weights is not None:
        load_weights_into(net, weights, adapt=built.adapt_state)
    size = size or built.input_size or (3, 224, 224)
    mean = tuple(float(v) for v in (mean if mean is not None else built.mean or IMAGENET_MEAN))
    std = tuple(float(v) for v in (std if std is not None else built.std or IMAGENET_STD))
    if len(mean) != size[0] or len(std) != size[0]:
        raise UsageError(f"mean/std need {size[0]} values (one per input channel)")
    if any(s <= 0 for s in std):
        raise UsageError("std values must be positive")
    net.eval()
    with torch.no_grad():
        out = net((torch.zeros(1, *size) - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1))
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise HardenError(f"{spec} does not return logits of shape (batch, classes) at input size {size}")
    entry = ModelEntry(spec=spec, source=source, name=name, kwargs=built.kwargs, num_classes=int(out.shape[1]),
                       input_size=list(size), mean=list(mean), std=list(std), pretrained=bool(pretrained),
                       weights=Path(weights).name if weights is not None else None)
    return HardenedModel(net, mean=mean, std=std, provenance=Provenance(model=entry))


# ----------------------------------------------------------------------------------------- weights


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a ``.pt``/``.pth`` file (never unpickling code)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"weights file '{path}' does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise HardenError(f"'{path}' is not a readable safetensors file ({exc})") from exc
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise HardenError(
            f"'{path}' could not be read as a weights-only torch file ({str(exc).splitlines()[0][:120]}); "
            "save a plain state dict with torch.save(model.state_dict(), path)"
        ) from exc
    obj = _unwrap_container(obj)
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise HardenError(f"'{path}' does not hold a state dict of tensors")
    return obj


def _unwrap_container(obj: Any) -> Any:
    """The state dict inside a training checkpoint: ``state_dict``, ``model_state_dict``, ``model``, ``net``,
    ``module``, or ``last`` (RobustBench's files holding ``last`` and ``best``), nested up to three deep."""
    for _ in range(3):
        if not isinstance(obj, dict):
            return obj
        for key in _CONTAINER_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        else:
            return obj
    return obj


_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "net", "module", "last")
#: wrappers whose prefix a saved state dict may carry: DataParallel/DDP, torch.compile, a ``model`` attribute
_PREFIXES = ("module.", "_orig_mod.", "model.")


def _strip_prefixes(state: dict[str, torch.Tensor], own: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes that every key carries and none of the network's own keys does."""
    changed = True
    while changed and state:
        changed = False
        for prefix in _PREFIXES:
            if all(k.startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in own):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def load_weights_into(net: nn.Module, path: str | os.PathLike[str],
                      adapt: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None) -> None:
    """Load a state dict file into ``net`` strictly, explaining any mismatch in one line.

    Wrapper prefixes (``module.``, ``_orig_mod.``, ``model.``) are removed first; ``adapt`` (a model
    source's hook) then drops what the checkpoint holds besides the network.
    """
    state = read_state_dict(path)
    if any(k.startswith("net.") for k in state) and not any(k.startswith("net.") for k in net.state_dict()):
        raise UsageError(f"'{path}' is a harden model file; load it with `harden.load` or pass it as MODEL")
    state = _strip_prefixes(state, net.state_dict())
    if adapt is not None:
        state = _strip_prefixes(adapt(state), net.state_dict())
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({', '.join(unexpected[:3])}"
                         f"{', ...' if len(unexpected) > 3 else ''})")
        if wrong:
            parts.append(f"{len(wrong)} of wrong shape ({', '.join(wrong[:2])}{', ...' if len(wrong) > 2 else ''})")
        raise HardenError(f"weights '{Path(path).name}' do not match the model: keys " + "; ".join(parts)
                          + " (check the model name and --num-classes)")
    net.load_state_dict(state, strict=True)
