"""Model sources backed by libraries and user code: ``timm:``, ``tv:`` (torchvision) and ``package.module:factory``.

Importing this module registers them (timm first: a bare model name resolves to timm, then torchvision).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from torch import nn

from harden.errors import HardenError, UsageError, close_matches, short_reason
from harden.model import IMAGENET_MEAN, IMAGENET_STD
from harden.sources.registry import BuiltNet, ModelSource, register_model_source

# ---------------------------------------------------------------------------------------------- timm


def timm_names() -> Sequence[str]:
    """The names of every model timm can build."""
    import timm

    return timm.list_models()


def _pretrained_error(spec: str, exc: BaseException) -> HardenError:
    reason = short_reason(exc)
    return HardenError(
        f"could not fetch pretrained weights for {spec} (offline or not cached: {reason}); "
        "download them where there is network and pass --weights FILE"
    )


HUB_HOST = "huggingface.co"


def hub_reachable(host: str = HUB_HOST, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``host``:443 opens within ``timeout`` seconds (one try, no retries)."""
    import socket

    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _hub_offline_unless_reachable(pretrained: bool) -> Iterator[None]:
    """Without a reachable hub, huggingface_hub looks in its local cache only: an offline machine fails at
    once instead of after a minute of retries, and cached weights still load."""
    if not pretrained or hub_reachable():
        yield
        return
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def build_timm(name: str, num_classes: int | None, pretrained: bool, kwargs: dict[str, Any]) -> BuiltNet:
    """Build timm model ``name`` (its pretrained weights only when asked; a clear error offline)."""
    import timm

    if not timm.is_model(name):
        raise UsageError(f"unknown timm model '{name}'{close_matches(name, timm.list_models())}")
    kwargs = dict(kwargs)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    try:
        with _hub_offline_unless_reachable(pretrained):
            net = timm.create_model(name, pretrained=pretrained, **kwargs)
    except Exception as exc:  # OSError and RuntimeError, or huggingface_hub's own hierarchy when offline
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


def timm_kwargs_for_size(name: str, input_size: tuple[int, int, int] | None) -> dict[str, Any]:
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


def tv_names() -> Sequence[str]:
    """The names of every torchvision classification model."""
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def build_tv(name: str, num_classes: int | None, pretrained: bool, kwargs: dict[str, Any]) -> BuiltNet:
    """Build torchvision model ``name`` (its default weights only when asked; a clear error offline)."""
    import torchvision

    if name not in set(tv_names()):
        raise UsageError(f"unknown torchvision model '{name}'{close_matches(name, tv_names())}")
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


TIMM = register_model_source(ModelSource("timm", "timm models (timm.list_models())", build_timm, timm_names,
                                         bare_rank=0))
TV = register_model_source(ModelSource("tv", "torchvision classification models", build_tv, tv_names, bare_rank=1))
USER_FACTORY = register_model_source(ModelSource(
    "import", "a user's factory: package.module:factory", _build_import, lambda: (), runs_user_code=True,
    bare_rank=None))
