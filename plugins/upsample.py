"""upsample: interpolate the input by an integer factor inside the model (Xu et al., rcm)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from harden.errors import HardenError, UsageError
from harden.graph.tracing import preserve_state, shape_run
from harden.model import HardenedModel
from harden.transforms import KEEP, Applied, Param, SearchDimension, Shorthand, Transform

MAX_SIDE = 8192  # larger inputs exhaust memory in the first forward pass


def _factor(text: str) -> int:
    value = float(text)
    if value != int(value):
        raise ValueError("the factor must be a whole number")
    return int(value)


class Upsample(Transform):
    """Enlarge every feature map by resizing the input ``factor`` times before the network."""

    name = "upsample"
    summary = "interpolate the input by K inside the model (larger feature maps before pooling)"
    params = (
        Param("factor", _factor, default=2, help="integer factor K >= 1",
              check=lambda v: None if v >= 1 else "must be a whole number >= 1"),
        Param("mode", str, default="nearest", help="interpolation mode", choices=("nearest", "bilinear")),
    )
    shorthands = (
        Shorthand("--upsample", "factor", "K", "Interpolate the input by K inside the model.", order=50),
        Shorthand("--upsample-mode", "mode", help="Interpolation of --upsample.", modifies="--upsample",
                  choices=("nearest", "bilinear"), default="nearest"),
    )
    search_order = 50
    search_needs_graph = False

    @classmethod
    def search_dimensions(cls, model: HardenedModel, traced: Any) -> tuple[list[SearchDimension], str | None]:
        choices = (KEEP, "2:nearest", "2:bilinear")
        return [SearchDimension("upsample", choices, "upsample the input inside the model")], None

    @classmethod
    def search_spec(cls, params: dict[str, str]) -> str | None:
        choice = params.get("upsample", KEEP)
        if choice == KEEP:
            return None
        factor, _, mode = choice.partition(":")
        return f"upsample:factor={factor},mode={mode or 'nearest'}"

    def apply(self, model: HardenedModel) -> Applied:
        factor, mode = self.config["factor"], self.config["mode"]
        before = model.net_input_size()
        if factor == 1:
            return Applied([f"upsample x1 ({mode}): nothing to do"])
        side = max(before[1], before[2]) * factor
        if side > MAX_SIDE:
            raise UsageError(f"upsample x{factor} would make {before[1] * factor}x{before[2] * factor} inputs "
                             f"(at most {MAX_SIDE} pixels a side); choose a smaller factor, such as 2")
        layer = nn.Upsample(scale_factor=factor, mode=mode, **({"align_corners": False} if mode != "nearest" else {}))
        model.input_transforms.append(layer)
        after = model.net_input_size()
        try:
            with torch.no_grad(), preserve_state(model.net), shape_run(after, model.net):
                model.net(torch.zeros(1, *after))
        except Exception as exc:
            del model.input_transforms[-1]
            reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
            raise HardenError(f"{model.spec} does not take {after[1]}x{after[2]} inputs ({reason}); upsample needs a "
                              "network that accepts any input size") from exc
        return Applied([f"input {before[1]}x{before[2]} -> {after[1]}x{after[2]} by {mode} upsampling x{factor}"])
