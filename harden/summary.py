"""Model facts for the before/after table: parameters, MACs, feature map size before global pooling."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from harden.graph import feature_map_size, trace_with_shapes
from harden.graph.tracing import eval_mode, preserve_state, shape_run
from harden.model import HardenedModel


@dataclass
class ModelFacts:
    """What a model costs and how it pools: parameters, MACs at its input size, the map before pooling."""

    params: int
    macs: int
    feature_map: tuple[int, int] | None
    input_size: tuple[int, int, int]

    def feature_map_text(self) -> str:
        return f"{self.feature_map[0]}x{self.feature_map[1]}" if self.feature_map else "n/a"


def count_macs(model: torch.nn.Module, input_size: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass on one image (torch's FLOP counter, FLOPs / 2)."""
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = torch.zeros(1, *input_size, device=dev)
    with eval_mode(model), torch.no_grad():
        counter = FlopCounterMode(display=False)
        try:
            with preserve_state(model), shape_run(model.net_input_size(), model), counter:
                model(x)
        except Exception:  # an op without a fake kernel: count on a real forward
            counter = FlopCounterMode(display=False)
            with preserve_state(model), counter:
                model(x)
    return int(counter.get_total_flops() // 2)


def model_facts(model: HardenedModel) -> ModelFacts:
    """Parameters, MACs at the model's input size and the feature map size before global pooling."""
    params = sum(p.numel() for p in model.parameters())
    macs = count_macs(model, model.input_size)
    try:
        fmap = feature_map_size(trace_with_shapes(model.net, model.net_input_size()))
    except Exception:  # an untraceable model still gets parameters and MACs
        fmap = None
    return ModelFacts(params, macs, fmap, model.input_size)


def human(n: float) -> str:
    """1234567 -> '1.23M'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def before_after_table(before: ModelFacts, after: ModelFacts) -> str:
    """A plain-text table comparing two models."""
    rows = [
        ("", "before", "after"),
        ("parameters", human(before.params), human(after.params)),
        ("MACs", human(before.macs), human(after.macs)),
        ("feature map before pooling", before.feature_map_text(), after.feature_map_text()),
        ("input size", "x".join(map(str, before.input_size)), "x".join(map(str, after.input_size))),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
