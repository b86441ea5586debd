"""The upsample transform."""

from __future__ import annotations

import pytest
import torch

import harden
from harden.errors import UsageError
from harden.summary import model_facts


def test_factor_one_changes_nothing() -> None:
    model = harden.load_model("tests.user_models:tiny_resnet", input_size=16).eval()
    same = harden.apply(model, ["upsample:factor=1,mode=bilinear"]).eval()
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(model(x), same(x))


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_upsampling_enlarges_the_feature_map(mode: str) -> None:
    model = harden.load_model("tv:resnet18", num_classes=10, input_size=32)
    out = harden.apply(model, [f"upsample:factor=2,mode={mode}"])
    assert out.net_input_size() == (3, 64, 64)
    assert model_facts(out).feature_map == (2, 2) and model_facts(model).feature_map == (1, 1)
    assert out.input_size == (3, 32, 32)


def test_nearest_upsampling_is_pixel_repetition() -> None:
    model = harden.load_model("tests.user_models:tiny_resnet", input_size=16)
    out = harden.apply(model, ["upsample:factor=2"])
    x = torch.rand(1, 3, 16, 16)
    up = out.input_transforms(x)
    assert torch.equal(up, x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))


@pytest.mark.parametrize("spec", ["upsample:factor=0", "upsample:factor=-2", "upsample:factor=1.5",
                                  "upsample:factor=abc", "upsample:mode=cubic", "upsample:scale=2"])
def test_bad_values(spec: str) -> None:
    with pytest.raises(UsageError):
        harden.apply(harden.load_model("tests.user_models:tiny_resnet", input_size=16), [spec])


def test_fixed_size_model_gets_one_clear_line() -> None:
    from harden.errors import HardenError

    vit = harden.load_model("timm:vit_tiny_patch16_224", num_classes=10, input_size=32)
    with pytest.raises(HardenError, match="does not take 64x64 inputs") as info:
        harden.apply(vit, ["upsample:factor=2"])
    assert "\n" not in str(info.value)
    assert len(vit.input_transforms) == 0
