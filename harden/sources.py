"""Model sources: where a base network comes from (timm, torchvision, a user's factory, ...).

A model spec is ``NAME`` (timm first, then torchvision), ``SOURCE:NAME`` for a registered source
(``timm:``, ``tv:``, ``cifar:``), or ``package.module:factory`` for a user's own model.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harden.errors import HardenError, UsageError, close_matches
from harden.model import IMAGENET_MEAN, IMAGENET_STD, HardenedModel
from harden.provenance import ModelEntry, Provenance


@dataclass(frozen=True)
class BuiltNet:
    """A freshly built base network and the defaults its source knows for it."""

    net: nn.Module
    input_size: tuple[int, int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: rewrites a checkpoint's state dict for this network (drops what it holds besides it), or None
    adapt_state: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None


@dataclass(frozen=True)
class ModelSource:
    """A named place models come from.

    ``build(name, num_classes, pretrained, kwargs)`` returns a :class:`BuiltNet`; ``names()`` lists
    the names it knows (for ``harden list`` and close-match hints).
    """

    name: str
    description: str
    build: Callable[[str, int | None, bool, dict[str, Any]], BuiltNet]
    names: Callable[[], Sequence[str]]
    runs_user_code: bool = False

    def has(self, model_name: str) -> bool:
        return model_name in set(self.names())


_SOURCES: dict[str, ModelSource] = {}


def register_model_source(source: ModelSource) -> ModelSource:
    """Register a model source under ``source.name`` (used as the ``NAME:`` prefix of specs)."""
    _SOURCES[source.name] = source
    return source


def model_sources() -> dict[str, ModelSource]:
    """All registered model sources, by prefix."""
    _load_builtin_sources()
    return dict(_SOURCES)


# ---------------------------------------------------------------------------------------------- timm


def _timm_names() -> Sequence[str]:
    import timm

    return timm.list_models()


def _pretrained_error(spec: str, exc: BaseException) -> HardenError:
    reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
    return HardenError(
        f"could not fetch pretrained weights for {spec} (offline or not cached: {reason}); "
        "download them where there is network and pass --weights FILE"
    )


def _build_timm(name: str, num_classes: int | None, pretrained: bool, kwargs: dict[str, Any]) -> BuiltNet:
    import timm

    if not timm.is_model(name):
        raise UsageError(f"unknown timm model '{name}'{close_matches(name, timm.list_models())}")
    kwargs = dict(kwargs)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    try:
        net = timm.create_model(name, pretrained=pretrained, **kwargs)
    except (OSError, RuntimeError, ValueError) as exc:
        if pretrained:
            raise _pretrained_error(f"timm:{name}", exc) from exc
        raise
    except Exception as exc:  # huggingface_hub raises its own hierarchy when offline
        if pretrained:
            raise _pretrained_error(f"timm:{name}", exc) from exc
        raise
    cfg = getattr(net, "pretrained_cfg", None) or {}
    return BuiltNet(
        net,
        input_size=tuple(cfg["input_size"]) if "input_size" in cfg else None,
        mean=tuple(cfg["mean"]) if "mean" in cfg else None,
        std=tuple(cfg["std"]) if "std" in cfg else None,
        kwargs={k: v for k, v in kwargs.items() if k != "num_classes"},
    )


def _timm_kwargs_for_size(name: str, input_size: tuple[int, int, int] | None) -> dict[str, Any]:
    """Constructor arguments a fixed-input-size timm model (a ViT) needs for another input size."""
    if input_size is None:
        return {}
    import timm

    cfg = timm.get_pretrained_cfg(name)
    cfg = cfg.to_dict() if cfg is not None and hasattr(cfg, "to_dict") else (cfg or {})
    if cfg.get("fixed_input_size") and tuple(cfg.get("input_size", ()))[1:] != tuple(input_size[1:]):
        return {"img_size": tuple(input_size[1:])}
    return {}


# -------------------------------------------------------------------------------------- torchvision


def _tv_names() -> Sequence[str]:
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def _build_tv(name: str, num_classes: int | None, pretrained: bool, kwargs: dict[str, Any]) -> BuiltNet:
    import torchvision

    if name not in set(_tv_names()):
        raise UsageError(f"unknown torchvision model '{name}'{close_matches(name, _tv_names())}")
    kwargs = dict(kwargs)
    weights = None
    if pretrained:
        weights = torchvision.models.get_model_weights(name).DEFAULT
        if num_classes not in (None, len(weights.meta["categories"])):
            raise UsageError(
                f"torchvision's pretrained {name} has {len(weights.meta['categories'])} classes; "
                f"drop --num-classes or load your own fine-tuned weights with --weights"
            )
        try:
            net = torchvision.models.get_model(name, weights=weights, **kwargs)
        except Exception as exc:
            raise _pretrained_error(f"tv:{name}", exc) from exc
    else:
        if num_classes is not None:
            kwargs["num_classes"] = num_classes
        net = torchvision.models.get_model(name, weights=None, **kwargs)
    return BuiltNet(net, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                    kwargs={k: v for k, v in kwargs.items() if k != "num_classes"})


# ------------------------------------------------------------------------------------ user factories


def _build_import(target: str, num_classes: int | None, pretrained: bool, kwargs: dict[str, Any]) -> BuiltNet:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise UsageError(f"'{target}' is not a factory spec; write package.module:factory")
    if pretrained:
        raise UsageError("--pretrained applies to timm and torchvision models; pass --weights FILE instead")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"cannot import '{module_name}' for model '{target}': {exc}") from exc
    factory = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise UsageError(f"module '{module_name}' has no attribute '{attr}'")
        factory = getattr(factory, part)
    if not callable(factory):
        raise UsageError(f"'{target}' is not callable")
    kwargs = dict(kwargs)
    if num_classes is not None:
        params = _parameters(factory)
        if params is None or "num_classes" in params or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
        ):
            kwargs["num_classes"] = num_classes
    net = factory(**kwargs)
    if not isinstance(net, nn.Module):
        raise HardenError(f"'{target}' returned {type(net).__name__}, not a torch.nn.Module")
    # A user's model is taken to expect images in [0, 1] unless --mean/--std say otherwise.
    return BuiltNet(net, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                    kwargs={k: v for k, v in kwargs.items() if k != "num_classes"})


def _parameters(fn: Callable[..., Any]) -> dict[str, inspect.Parameter] | None:
    try:
        return dict(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return None


_BUILTINS_LOADED = False


def _load_builtin_sources() -> None:
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    register_model_source(ModelSource("timm", "timm models (timm.list_models())", _build_timm, _timm_names))
    register_model_source(ModelSource("tv", "torchvision classification models", _build_tv, _tv_names))
    register_model_source(ModelSource(
        "import", "a user's factory: package.module:factory", _build_import, lambda: (), runs_user_code=True))
    try:  # the CIFAR zoo registers itself when present
        importlib.import_module("harden.zoo")
    except ImportError:
        pass


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
        kwargs = {**_timm_kwargs_for_size(name, size), **kwargs}
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
