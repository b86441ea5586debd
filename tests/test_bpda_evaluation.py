"""`harden evaluate` on a model with straight-through operators: attacked as it is and with BPDA, the lower
figure per image counted, and gradient masking flagged when the model as it is looks more robust."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import harden
from harden.bpda import StraightThrough
from tests.helpers import one_thread, train_on_sample


class _Quantize(StraightThrough):
    """A planted zero-gradient layer: the input rounded to 16 levels (gradient 0 almost everywhere)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 15) / 15


@pytest.fixture(scope="module")
def tiny() -> nn.Module:
    with one_thread():
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
        return train_on_sample(harden.wrap(net, input_size=32, mean=(0.5,) * 3, std=(0.25,) * 3), epochs=5, lr=1e-2)


def _pgd(model: nn.Module, **options) -> harden.evaluation.EvaluationReport:
    with one_thread():
        return harden.evaluate(model, "sample", attack="pgd", steps=10, eps=8 / 255, n=48, random_subset=True,
                               seed=0, batch_size=16, device="cpu", check_examples=0, **options)


def test_a_planted_zero_gradient_layer_is_attacked_with_bpda_and_flagged(tiny: nn.Module) -> None:
    masked = nn.Sequential(_Quantize(), tiny).eval()
    as_is = _pgd(masked, bpda=False)
    both = _pgd(masked)
    figures = both["straight_through"]
    assert figures["modules"] == 1 and figures["as_is"]["robust_correct"] == as_is.robust_correct
    assert both.robust_correct == min(as_is.robust_correct, figures["bpda"]["robust_correct"])
    assert both.robust_correct < as_is.robust_correct  # the zero gradient hid adversarial examples
    assert "gradient-masking" in [w.name for w in both.warnings]
    assert "gradient-masking" not in [w.name for w in as_is.warnings] and "straight_through" not in as_is
    assert {o for o in both.examples.outcome if o.startswith("bpda:")}  # images only BPDA broke, named so
    assert both.clean_correct == as_is.clean_correct  # the forward pass is the same
    assert "note: 1 straight-through operator: attacked as it is" in harden.evaluation.summary_table(both)


def test_a_model_without_straight_through_operators_is_evaluated_once_and_quietly(tiny: nn.Module) -> None:
    report = _pgd(tiny)
    assert "straight_through" not in report and "gradient-masking" not in [w.name for w in report.warnings]


def test_meansparse_is_evaluated_with_bpda_by_default(tiny: nn.Module) -> None:
    with one_thread():
        sparse = harden.apply(tiny, ["meansparse:data=sample,n=128,alpha=0.25"])
    report = _pgd(sparse)
    figures = report["straight_through"]
    assert figures["modules"] >= 1
    assert report.robust_correct <= min(figures["as_is"]["robust_correct"], figures["bpda"]["robust_correct"])
