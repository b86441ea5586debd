"""Downsampling points and the stride-mod / strides transforms."""

from __future__ import annotations

import pytest
import torch

import harden
from harden.errors import HardenError, UsageError
from harden.graph import find_downsampling_points, find_stem, trace_with_shapes
from harden.summary import model_facts


def points_of(model):
    traced = trace_with_shapes(model.net, model.net_input_size())
    points = find_downsampling_points(traced)
    return points, find_stem(traced, points)


def test_resnet18_points_group_the_shortcut_with_the_strided_conv() -> None:
    model = harden.load_model("tv:resnet18", num_classes=10, input_size=64)
    points, stem = points_of(model)
    assert [sorted(op.path for op in p.ops) for p in points] == [
        ["conv1"], ["maxpool"], ["layer2.0.conv1", "layer2.0.downsample.0"],
        ["layer3.0.conv1", "layer3.0.downsample.0"], ["layer4.0.conv1", "layer4.0.downsample.0"]]
    assert [p.index for p in stem] == [0, 1]
    assert [p.in_size for p in points] == [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4)]


def test_stride_mod_doubles_the_final_feature_map() -> None:
    model = harden.load_model("tv:resnet18", num_classes=10, input_size=64)
    out = harden.apply(model, ["stride-mod"])
    assert out.net.layer2[0].conv1.stride == (1, 1) and out.net.layer2[0].downsample[0].stride == (1, 1)
    assert out.net.layer3[0].conv1.stride == (2, 2)
    assert model_facts(model).feature_map == (2, 2) and model_facts(out).feature_map == (4, 4)
    assert model.net.layer2[0].conv1.stride == (2, 2), "apply must not change its input"


def test_strides_equal_to_the_original_leave_logits_identical() -> None:
    model = harden.load_model("tv:resnet18", num_classes=10, input_size=64).eval()
    same = harden.apply(model, ["strides:pattern=22222"]).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), same(x))


def test_strides_pattern_is_checked_against_the_points() -> None:
    model = harden.load_model("tv:resnet18", num_classes=10, input_size=64)
    with pytest.raises(UsageError, match=r"has 3 digits but .* 5 downsampling points \(current pattern 22222"):
        harden.apply(model, ["strides:pattern=122"])
    for bad in ("12x", "1022", ""):
        with pytest.raises(UsageError):
            harden.apply(model, [f"strides:pattern={bad}"])


def test_leading_ones_stand_for_stride_one_stages() -> None:
    model = harden.load_model("tests.user_models:tiny_resnet", input_size=16)
    out = harden.apply(model, ["strides:pattern=11"])  # the one point found, preceded by a stride-1 stage
    assert out.net.conv1.stride == (1, 1) and out.net.shortcut.stride == (1, 1)
    assert model_facts(out).feature_map == (16, 16)


def test_pooling_point_is_removed_at_stride_one() -> None:
    model = harden.load_model("tv:vgg16_bn", num_classes=10, input_size=32)
    out = harden.apply(model, ["strides:pattern=12222"])
    assert isinstance(out.net.features[6], torch.nn.Identity)
    assert model_facts(out).feature_map == (2, 2)


def test_resnet_d_shortcut_pool_changes_with_the_main_path() -> None:
    model = harden.load_model("timm:resnet50d", num_classes=10, input_size=64)
    out = harden.apply(model, ["stride-mod"])
    assert out.net.layer2[0].conv2.stride == (1, 1)
    assert isinstance(out.net.layer2[0].downsample[0], torch.nn.Identity)
    assert model_facts(out).feature_map == (4, 4)


def test_even_kernel_patchify_conv_keeps_its_size() -> None:
    model = harden.load_model("tv:convnext_tiny", num_classes=10, input_size=64)
    out = harden.apply(model, ["stride-mod"])
    assert model_facts(out).feature_map == (4, 4)


def test_vit_gets_one_clear_line() -> None:
    model = harden.load_model("timm:vit_tiny_patch16_224", num_classes=10, input_size=32)
    with pytest.raises(HardenError, match="no downsampling point after the stem") as info:
        harden.apply(model, ["stride-mod"])
    assert "\n" not in str(info.value)
