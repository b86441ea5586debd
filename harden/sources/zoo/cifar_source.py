"""The ``cifar:`` model source: CIFAR-form networks of the adversarial-robustness literature.

``cifar:resnet18``, ``cifar:resnet34``, ``cifar:preactresnet18``, ``cifar:wrn-DEPTH-WIDEN`` (any
``6n+4`` depth, e.g. ``wrn-28-10``, ``wrn-34-10``, ``wrn-16-1``), ``cifar:vgg16_bn`` (and the other
VGGs), ``cifar:alexnet``, the RobustResNets ``cifar:robustresnet-a1`` .. ``a4``, their basic-block
twins ``cifar:wrn-a1`` .. ``a4`` and ``cifar:robustresnet-custom`` (``depths``/``widths`` keyword
arguments, as ``harden scale --build`` writes them). Defaults: 10 classes, 3x32x32 inputs, the
CIFAR-10 mean and std. Every name takes ``in_chans`` (e.g. 1 for grayscale data: the stem convolution
then takes one channel, and the default normalization is none, as CIFAR-10's statistics do not fit).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from harden.errors import UsageError, close_matches
from harden.sources.registry import BuiltNet, ModelSource, register_model_source
from harden.sources.zoo import cifar
from harden.sources.zoo.cifar import CIFAR10_MEAN, CIFAR10_STD
from harden.sources.zoo.robustresnet import BLOCK_DEFAULTS, CONFIGS, RobustResNet

_WRN = re.compile(r"wrn-(\d+)-(\d+)")
_ROBUST = re.compile(r"(robustresnet|wrn)-(a[1-4])")

_FIXED: dict[str, Callable[[int], nn.Module]] = {
    "resnet18": cifar.resnet18,
    "resnet34": cifar.resnet34,
    "preactresnet18": cifar.preactresnet18,
    "alexnet": lambda n: cifar.CifarAlexNet(n),
}
for _vgg, _cfg in cifar.VGG_CONFIGS.items():
    _FIXED[_vgg] = lambda n, c=_cfg: cifar.CifarVGG(c, batch_norm=False, num_classes=n)
    _FIXED[f"{_vgg}_bn"] = lambda n, c=_cfg: cifar.CifarVGG(c, batch_norm=True, num_classes=n)

_COMMON_WRN = ("wrn-16-1", "wrn-28-10", "wrn-34-10", "wrn-34-20", "wrn-70-16")
_ROBUST_KWARGS = ("activation", "strides", *BLOCK_DEFAULTS)


def names() -> list[str]:
    """Model names of the ``cifar:`` source (any ``wrn-DEPTH-WIDEN`` is accepted besides these)."""
    return [
        "resnet18", "resnet34", "preactresnet18", *_COMMON_WRN, "vgg16_bn", "vgg11_bn", "vgg13_bn", "vgg19_bn",
        "vgg11", "vgg13", "vgg16", "vgg19", "alexnet",
        *(f"robustresnet-{k}" for k in CONFIGS), *(f"wrn-{k}" for k in CONFIGS), "robustresnet-custom",
    ]


def _check_kwargs(name: str, kwargs: dict[str, Any], allowed: Sequence[str]) -> None:
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        what = f"only {', '.join(allowed)}" if allowed else "no constructor arguments"
        raise UsageError(f"cifar:{name} takes {what}; got {', '.join(unknown)}")


def _int_triple(name: str, key: str, value: Any) -> list[int]:
    try:
        items = [int(v) for v in (value.split(",") if isinstance(value, str) else value)]
    except (TypeError, ValueError):
        items = []
    if len(items) != 3 or min(items) < 1:
        raise UsageError(f"cifar:{name} needs {key} as three positive whole numbers (one per stage), got {value!r}")
    return items


def _robust(name: str, num_classes: int, kwargs: dict[str, Any], block: str,
            depths: Sequence[int], widths: Sequence[int]) -> nn.Module:
    extra = dict(kwargs)
    if "strides" in extra:
        extra["strides"] = _int_triple(name, "strides", extra["strides"])
    return RobustResNet(depths, widths, num_classes, block=block, **extra)


def build(name: str, num_classes: int | None, pretrained: bool, kwargs: dict[str, Any]) -> BuiltNet:
    """Build ``cifar:NAME`` with fresh weights (``pretrained`` is refused: pass --weights FILE)."""
    if pretrained:
        raise UsageError(f"cifar:{name} has no bundled weights; pass a state dict with --weights FILE "
                         "(e.g. a RobustBench or paper checkpoint)")
    n = 10 if num_classes is None else int(num_classes)
    kwargs = dict(kwargs)
    recorded = dict(kwargs)
    in_chans = _in_chans(name, kwargs.pop("in_chans", 3))
    try:
        if name in _FIXED:
            _check_kwargs(name, kwargs, ())
            net = _FIXED[name](n)
        elif (m := _WRN.fullmatch(name)) is not None:
            net = _wide_resnet(name, n, kwargs, int(m.group(1)), int(m.group(2)))
        elif (m := _ROBUST.fullmatch(name)) is not None:
            block = "robust" if m.group(1) == "robustresnet" else "basic"
            _check_kwargs(name, kwargs, _ROBUST_KWARGS if block == "robust" else ("activation", "strides"))
            depths, widths = CONFIGS[m.group(2)]
            net = _robust(name, n, kwargs, block, depths, widths)
        elif name == "robustresnet-custom":
            _check_kwargs(name, kwargs, ("depths", "widths", "block", *_ROBUST_KWARGS))
            if "depths" not in kwargs or "widths" not in kwargs:
                raise UsageError("cifar:robustresnet-custom needs depths and widths (three each), "
                                 "e.g. from `harden scale --flops 10G --build -o FILE`")
            depths = _int_triple(name, "depths", kwargs.pop("depths"))
            widths = _int_triple(name, "widths", kwargs.pop("widths"))
            block = str(kwargs.pop("block", "robust"))
            if block not in ("robust", "basic"):
                raise UsageError(f"cifar:robustresnet-custom: block must be 'robust' or 'basic', got '{block}'")
            recorded.update({"depths": depths, "widths": widths, "block": block})
            net = _robust(name, n, kwargs, block, depths, widths)
        else:
            raise UsageError(f"unknown CIFAR model '{name}'{close_matches(name, names())} "
                             "(any wrn-DEPTH-WIDEN works, e.g. wrn-28-10)")
    except (ValueError, TypeError) as exc:
        raise UsageError(f"cifar:{name}: {exc}") from exc
    if "strides" in recorded:
        recorded["strides"] = list(recorded["strides"]) if not isinstance(recorded["strides"], str) else [
            int(v) for v in recorded["strides"].split(",")]
    if in_chans != 3:  # CIFAR-10's statistics mean nothing for other data: no normalization unless given
        set_input_channels(net, in_chans)
        return BuiltNet(net, input_size=(in_chans, 32, 32), mean=(0.0,) * in_chans, std=(1.0,) * in_chans,
                        kwargs=recorded)
    return BuiltNet(net, input_size=(3, 32, 32), mean=CIFAR10_MEAN, std=CIFAR10_STD, kwargs=recorded)


def _wide_resnet(name: str, n: int, kwargs: dict[str, Any], depth: int, widen: int) -> nn.Module:
    """``cifar:wrn-DEPTH-WIDEN`` with ``n`` classes, its depth and widen factor checked."""
    _check_kwargs(name, kwargs, ("drop_rate", "base_width"))
    if depth < 10 or (depth - 4) % 6 != 0:
        raise UsageError(f"cifar:{name}: a WRN depth must be 6n+4 (10, 16, 22, 28, 34, 40, ...), got {depth}")
    if widen < 1:
        raise UsageError(f"cifar:{name}: the widen factor must be at least 1")
    return cifar.WideResNet(depth, widen, n, drop_rate=float(kwargs.get("drop_rate", 0.0)),
                            base_width=int(kwargs.get("base_width", 16)))


def _in_chans(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"cifar:{name}: in_chans must be a positive whole number, got {value!r}")
    return value


def set_input_channels(net: nn.Module, channels: int) -> None:
    """Give ``net``'s first convolution ``channels`` input channels (fresh He-normal weights, as the zoo's)."""
    name, old = next((n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d))
    conv = nn.Conv2d(channels, old.out_channels, old.kernel_size, stride=old.stride, padding=old.padding,
                     dilation=old.dilation, bias=old.bias is not None, padding_mode=old.padding_mode)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    net.set_submodule(name, conv)


SOURCE = register_model_source(ModelSource(
    "cifar", "CIFAR-form ResNet/PreAct/WRN/VGG/AlexNet and RobustResNets (3x3 stem, 32x32 inputs)", build, names))
