"""Model sources: where a base network comes from (timm, torchvision, a user's factory, ...).

A model spec is ``NAME`` (timm first, then torchvision), ``SOURCE:NAME`` for a registered source
(``timm:``, ``tv:``, ``cifar:``, ``robustbench:``), or ``package.module:factory`` for a user's own
model. The registry is :mod:`harden.sources.registry`; :mod:`harden.sources` registers the built-in
sources (:mod:`harden.sources.library`, :mod:`harden.sources.zoo`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harden.errors import HardenError, UsageError, close_matches, short_reason
from harden.model import IMAGENET_MEAN, IMAGENET_STD, HardenedModel
from harden.provenance import RANDOM_WEIGHTS, ModelEntry, Provenance
from harden.shapes import InputSize, first_conv_channels, fit_statistics, parse_input_size
from harden.sources.library import timm_kwargs_for_size
from harden.sources.registry import BuiltNet, ModelSource, bare_name_order, register_model_source, registered_sources

__all__ = ["BuiltNet", "ModelSource", "build_net", "load_model", "load_weights_into", "model_sources", "parse_spec",
           "read_state_dict", "register_model_source"]


def model_sources() -> dict[str, ModelSource]:
    """All registered model sources, by prefix."""
    return registered_sources()


# ------------------------------------------------------------------------------------------- specs


def parse_spec(spec: str) -> tuple[str, str]:
    """Split a model spec into ``(source, name)``; a bare name is looked up in the sources by their
    ``bare_rank`` (timm, then torchvision, then the zoo's)."""
    sources = model_sources()
    spec = spec.strip()
    if not spec:
        raise UsageError("empty model spec")
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in sources and prefix != "import":
        return prefix, rest
    if sep:
        return "import", spec
    known: list[str] = []
    for src in bare_name_order():
        if src.has(spec):
            return src.name, spec
        known += [n if src.bare_rank == 0 else f"{src.name}:{n}" for n in src.names()]
    raise UsageError(f"unknown model '{spec}'{close_matches(spec, known)}")


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
               input_size: int | str | Sequence[int] | None = None,
               mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
               model_kwargs: dict[str, Any] | None = None) -> HardenedModel:
    """Build ``spec`` as a :class:`HardenedModel` taking images in [0, 1].

    ``input_size`` is ``N``, ``(H, W)``, ``(C, H, W)`` or the text ``"1x28x28"``; a channel count other
    than 3 builds timm and ``cifar:`` models with ``in_chans=C``, and a user's model is asked nothing (its
    first convolution says how many channels it takes). ``weights`` is a state dict file (``.safetensors``,
    ``.pt``, ``.pth``) for the base network; ``pretrained`` asks the model's library for its own weights.
    Without either the weights are random (recorded as ``weights: random``; evaluating or fine-tuning
    such a model says so in a :class:`HardenWarning`). Transforms the source applies as part of the model
    it names (:attr:`BuiltNet.transforms`) are replayed before the weights load and recorded in the provenance.

    >>> model = load_model("cifar:wrn-16-1", num_classes=3, input_size="1x28x28")  # doctest: +SKIP
    """
    if num_classes is not None and num_classes <= 0:
        raise UsageError(f"--num-classes must be positive, got {num_classes}")
    source, name = parse_spec(spec)
    asked = parse_input_size(input_size)
    kwargs = {**_channel_kwargs(source, name, asked), **dict(model_kwargs or {})}
    if source == "timm":
        kwargs = {**timm_kwargs_for_size(name, asked.shape() if asked else None), **kwargs}
    built = build_net(source, name, num_classes=num_classes, pretrained=pretrained, kwargs=kwargs)
    net = built.net
    size = _model_size(asked, built)
    mean = _statistics(mean, built.mean or IMAGENET_MEAN, size[0], "mean")
    std = _statistics(std, built.std or IMAGENET_STD, size[0], "std")
    if any(s <= 0 for s in std):
        raise UsageError("std values must be positive")
    classes = _output_classes(spec, net, size, mean, std)
    origin = Path(weights).name if weights is not None else None if pretrained else RANDOM_WEIGHTS
    entry = ModelEntry(spec=spec, source=source, name=name, kwargs=built.kwargs, num_classes=classes,
                       input_size=list(size), mean=list(mean), std=list(std), pretrained=bool(pretrained),
                       weights=origin)
    model = HardenedModel(net, mean=mean, std=std, provenance=Provenance(model=entry))
    if built.transforms:  # part of the named model: in place before its checkpoint, which holds their buffers
        from harden.transforms import replay_entry

        for applied in built.transforms:
            replay_entry(model, applied)
    if weights is not None:
        load_weights_into(model.net, weights, adapt=built.adapt_state)
    model.remember_untrained()  # random weights: training them in the user's own loop is noticed at save
    return model


def _channel_kwargs(source: str, name: str, asked: InputSize | None) -> dict[str, Any]:
    """Constructor arguments for a channel count other than 3 (``in_chans``), or a one-line refusal."""
    if asked is None or asked.channels in (None, 3):
        return {}
    if source in ("timm", "cifar"):
        return {"in_chans": asked.channels}
    if source == "import":
        return {}
    raise UsageError(f"{source}:{name} takes 3-channel images; for {asked.channels}-channel data use a timm or "
                     f"cifar: model (built with in_chans={asked.channels}), or pass --input-size "
                     f"3x{asked.height}x{asked.width} and harden converts the images to RGB")


def _model_size(asked: InputSize | None, built: BuiltNet) -> tuple[int, int, int]:
    """(C, H, W): as asked, channels from the network's first convolution when not stated."""
    channels = first_conv_channels(built.net) or (built.input_size or (3,))[0]
    if asked is not None:
        if asked.channels is not None and asked.channels != channels and first_conv_channels(built.net):
            raise UsageError(f"the model's first convolution takes {channels} channels, not {asked.channels}; "
                             f"pass --input-size {channels}x{asked.height}x{asked.width}")
        return asked.shape(channels)
    if built.input_size is not None:
        return (channels, *built.input_size[1:])  # type: ignore[return-value]
    return (channels, 224, 224)


def _statistics(given: Sequence[float] | None, default: Sequence[float], channels: int,
                what: str) -> tuple[float, ...]:
    if given is None:
        return fit_statistics(default, channels)
    values = tuple(float(v) for v in given)
    if len(values) != channels:
        raise UsageError(f"--{what} needs {channels} value{'s' if channels > 1 else ''} (one per input channel), "
                         f"got {len(values)}")
    return values


def _output_classes(spec: str, net: nn.Module, size: tuple[int, int, int], mean: Sequence[float],
                    std: Sequence[float]) -> int:
    """The number of logits ``net`` returns for one image of ``size``; one line if it does not run."""
    net.eval()
    x = (torch.zeros(1, *size) - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    try:
        with torch.no_grad():
            out = net(x)
    except (RuntimeError, ValueError) as exc:
        reason = short_reason(exc)
        raise UsageError(f"{spec} does not run at input size {'x'.join(map(str, size))} ({reason}); "
                         "pick another --input-size") from exc
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise HardenError(f"{spec} does not return logits of shape (batch, classes) at input size {size}")
    return int(out.shape[1])


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
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise HardenError(
                f"'{path}' holds pickled Python objects (a whole model?), not a state dict of tensors, and harden "
                "never runs pickled code; save the weights with torch.save(model.state_dict(), path)") from exc
        raise HardenError(
            f"'{path}' could not be read as a weights-only torch file ({short_reason(exc, 120)}); "
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


def strip_prefixes(state: dict[str, torch.Tensor], own: Iterable[str]) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes that every key carries and none of the network's own keys (``own``) does."""
    own = list(own)
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
    state = strip_prefixes(state, net.state_dict())
    if adapt is not None:
        state = strip_prefixes(adapt(state), net.state_dict())
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
