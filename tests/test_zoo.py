"""The cifar: model source: names, defaults, literature parameter counts, traceability, transforms."""

from __future__ import annotations

import pytest
import torch

import harden
from harden.errors import UsageError
from harden.graph import feature_map_size, trace_with_shapes
from harden.sources import model_sources
from harden.sources.zoo import build, names
from harden.sources.zoo.cifar import CIFAR10_MEAN, CIFAR10_STD
from harden.summary import model_facts


def _params_meta(name: str, **kwargs) -> int:
    """Parameter count of cifar:NAME at 10 classes, built on the meta device (no memory, no forward)."""
    with torch.device("meta"):
        net = build(name, None, False, kwargs).net
    return sum(p.numel() for p in net.parameters())


def test_source_is_registered_with_the_common_names():
    assert "cifar" in model_sources()
    listed = set(names())
    for name in ("resnet18", "resnet34", "preactresnet18", "wrn-28-10", "wrn-34-10", "vgg16_bn", "alexnet",
                 "robustresnet-a1", "robustresnet-a4"):
        assert name in listed


def test_defaults_cifar_size_classes_and_normalization():
    model = harden.load_model("cifar:resnet18")
    m = model.provenance.model
    assert (m.source, m.name) == ("cifar", "resnet18")
    assert model.input_size == (3, 32, 32)
    assert model.num_classes == 10
    assert tuple(m.mean) == CIFAR10_MEAN and tuple(m.std) == CIFAR10_STD
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    # the classic CIFAR stem: 3x3 stride-1 conv, no max-pool
    conv1 = model.net.conv1
    assert conv1.kernel_size == (3, 3) and conv1.stride == (1, 1)
    assert not any(isinstance(mod, torch.nn.MaxPool2d) for mod in model.net.modules())


@pytest.mark.parametrize("name,expected", [
    ("resnet18", 11.2e6), ("resnet34", 21.3e6), ("preactresnet18", 11.2e6),
    ("wrn-28-10", 36.5e6), ("wrn-34-10", 46.2e6), ("wrn-70-16", 266.8e6),
])
def test_parameter_counts_match_the_literature(name, expected):
    assert abs(_params_meta(name) - expected) / expected < 0.01


def test_num_classes_changes_only_the_head():
    a = sum(p.numel() for p in build("wrn-16-1", 10, False, {}).net.parameters())
    b = sum(p.numel() for p in build("wrn-16-1", 100, False, {}).net.parameters())
    assert b - a == 90 * 64 + 90  # fc weight and bias of the 64-channel head


@pytest.mark.parametrize("name,fmap", [
    ("preactresnet18", (4, 4)), ("wrn-16-1", (8, 8)), ("vgg16_bn", (1, 1)), ("alexnet", (2, 2)),
])
def test_models_trace_with_torch_fx(name, fmap):
    net = build(name, None, False, {}).net
    traced = trace_with_shapes(net, (3, 32, 32))
    assert feature_map_size(traced) == fmap
    net.eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(traced.gm(x), net(x), atol=1e-5)


def test_rcm_strides_1122_give_an_8x8_map_on_resnet18():
    base = harden.load_model("cifar:resnet18")
    assert model_facts(base).feature_map == (4, 4)
    hardened = harden.apply(base, ["strides:pattern=1122"])
    assert model_facts(hardened).feature_map == (8, 8)
    assert hardened.net.layer2[0].conv1.stride == (1, 1)
    assert hardened.net.layer3[0].conv1.stride == (2, 2)


def test_any_wrn_depth_and_width_builds_and_bad_ones_are_refused():
    net = build("wrn-10-2", None, False, {}).net
    assert len(net.block1.layer) == 1 and net.fc.in_features == 128
    with pytest.raises(UsageError, match="6n\\+4"):
        build("wrn-27-10", None, False, {})
    with pytest.raises(UsageError, match="did you mean"):
        harden.load_model("cifar:resnet19")
    with pytest.raises(UsageError, match="--weights"):
        build("resnet18", None, True, {})
    with pytest.raises(UsageError, match="no constructor arguments"):
        build("resnet18", None, False, {"depth": 3})


def test_state_dict_keys_follow_robustbench_and_rcm():
    keys = set(build("preactresnet18", None, False, {}).net.state_dict())
    assert {"conv1.weight", "layer2.0.shortcut.0.weight", "bn.weight", "linear.weight"} <= keys
    keys = set(build("wrn-16-1", None, False, {}).net.state_dict())
    assert {"conv1.weight", "block1.layer.0.bn1.weight", "block2.layer.0.convShortcut.weight", "bn1.running_var",
            "fc.bias"} <= keys
    keys = set(build("resnet18", None, False, {}).net.state_dict())
    assert {"conv1.weight", "layer2.0.downsample.0.weight", "layer2.0.downsample.1.weight", "fc.weight"} <= keys


def test_save_and_load_rebuild_a_transformed_cifar_model(tmp_path):
    model = harden.apply(harden.load_model("cifar:wrn-16-1"), ["strides:pattern=112"])
    path = harden.save(model, tmp_path / "w.safetensors")
    again = harden.load(path)
    model.eval()
    again.eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), again(x), atol=1e-5)
    assert model_facts(again).feature_map == (16, 16)
