"""Input shapes: reading ``N``, ``HxW`` or ``CxHxW`` (or a tuple) and finding how many channels a network takes.

>>> parse_input_size("28")
InputSize(channels=None, height=28, width=28)
>>> parse_input_size("1x28x28").shape()
(1, 28, 28)
>>> parse_input_size((64, 48)).shape(channels=3)
(3, 64, 48)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from harden.errors import UsageError

_FORMS = "N, HxW or CxHxW (e.g. 32, 64x48, 1x28x28)"


@dataclass(frozen=True)
class InputSize:
    """A model's input: height and width, and the channel count when it was stated."""

    channels: int | None
    height: int
    width: int

    def shape(self, channels: int | None = None) -> tuple[int, int, int]:
        """(C, H, W): the stated channels, else ``channels``, else 3."""
        return (self.channels or channels or 3, self.height, self.width)


def parse_input_size(value: int | str | Sequence[int] | None) -> InputSize | None:
    """An input size from ``N``, ``HxW``, ``CxHxW`` (text, int or sequence); None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise UsageError(f"input size must be {_FORMS}, got {value!r}")
    if isinstance(value, int):
        parts: list[int] = [value, value]
    elif isinstance(value, str):
        text = value.strip().lower()
        if not re.fullmatch(r"\d+(x\d+){0,2}", text):
            raise UsageError(f"input size must be {_FORMS}, got '{value}'")
        parts = [int(v) for v in text.split("x")]
        if len(parts) == 1:
            parts = parts * 2
    else:
        try:
            parts = [int(v) for v in value]
        except (TypeError, ValueError):
            raise UsageError(f"input size must be {_FORMS}, got {value!r}") from None
        if len(parts) not in (2, 3):
            raise UsageError(f"input size must be {_FORMS}, got {value!r}")
    if min(parts) <= 0:
        raise UsageError(f"input size must be positive, got {value!r}")
    if len(parts) == 3:
        return InputSize(parts[0], parts[1], parts[2])
    return InputSize(None, parts[0], parts[1])


def first_conv_channels(net: nn.Module) -> int | None:
    """The input channels of the first convolution of ``net`` (in module order), or None if it has none."""
    for module in net.modules():
        if isinstance(module, nn.Conv2d) and module.in_channels > 0:
            return int(module.in_channels)
    return None


def fit_statistics(values: Sequence[float], channels: int) -> tuple[float, ...]:
    """Per-channel statistics for ``channels``: as given when the count fits, their average for 1 channel.

    A source's RGB mean/std (ImageNet, CIFAR-10) become one value for a grayscale model, as timm does when
    it builds a model with ``in_chans=1``; other counts have no meaningful default and are refused.
    """
    values = tuple(float(v) for v in values)
    if len(values) == channels:
        return values
    if len(set(values)) == 1:  # no normalization (0 and 1), or one value for every channel
        return values[:1] * channels
    if channels == 1:
        return (sum(values) / len(values),)
    raise UsageError(f"no default normalization for {channels} input channels; pass --mean and --std "
                     f"with {channels} values each")
