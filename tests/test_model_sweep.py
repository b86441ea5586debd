"""Every model the core must support: stride-mod and upsample apply (or say clearly why not)."""

from __future__ import annotations

import pytest
import torch

import harden
from harden.errors import HardenError
from harden.graph import feature_map_size, trace_with_shapes

TORCHVISION = ["resnet18", "resnet50", "wide_resnet50_2", "vgg16_bn", "alexnet", "convnext_tiny",
               "efficientnet_b0", "mobilenet_v3_small", "densenet121", "regnet_y_400mf"]
TIMM = ["resnet18", "resnet50d", "convnext_tiny", "efficientnet_b0", "tf_efficientnet_b0", "regnety_008",
        "mobilenetv3_large_100", "resnext50_32x4d", "vit_tiny_patch16_224"]
MODELS = [f"tv:{n}" for n in TORCHVISION] + [f"timm:{n}" for n in TIMM]


def feature_map(model: harden.HardenedModel) -> tuple[int, int]:
    return feature_map_size(trace_with_shapes(model.net, model.net_input_size()))


@pytest.mark.parametrize("spec", MODELS)
def test_stride_mod_and_upsample(spec: str) -> None:
    size = 128 if spec == "tv:alexnet" else 64  # AlexNet's stride-4 stem and three pools need more pixels
    model = harden.load_model(spec, num_classes=10, input_size=size)
    before = feature_map(model)
    if "vit" in spec:
        with pytest.raises(HardenError, match="no downsampling point"):
            harden.apply(model, ["stride-mod"])
        return
    strided = harden.apply(model, ["stride-mod"])
    after = feature_map(strided)
    assert after is not None and before is not None
    # pools without padding round down, so an odd map may come out one larger than twice the original
    assert 2 * before[0] - 1 <= after[0] <= 2 * before[0] + 1, (before, after)
    up = harden.apply(model, ["upsample:factor=2"])
    assert feature_map(up)[0] >= 2 * before[0] - 1
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        assert strided.eval()(x).shape == (2, 10)


def test_train_and_eval_still_switch_after_transforms() -> None:
    model = harden.load_model("tests.user_models:tiny_resnet", input_size=16, num_classes=10)
    model.net.drop.p = 0.5
    out = harden.apply(model, ["stride-mod", "upsample:factor=2"])
    x = torch.rand(4, 3, 16, 16)
    out.train()
    bn = out.net.bn1
    stats = bn.running_mean.clone()
    a, b = out(x), out(x)
    assert not torch.equal(a, b), "dropout must be active in train mode"
    assert not torch.equal(stats, bn.running_mean), "batch-norm statistics must update in train mode"
    out.eval()
    stats = bn.running_mean.clone()
    assert torch.equal(out(x), out(x))
    assert torch.equal(stats, bn.running_mean)


@pytest.mark.slow
def test_timm_drop_path_still_follows_the_mode() -> None:
    model = harden.load_model("timm:efficientnet_b0", num_classes=10, input_size=64,
                              model_kwargs={"drop_path_rate": 0.5})
    out = harden.apply(model, ["stride-mod"])
    x = torch.rand(2, 3, 64, 64)
    out.train()
    assert not torch.equal(out(x), out(x))
    out.eval()
    assert torch.equal(out(x), out(x))


class CachesItsFeatures(torch.nn.Module):
    """A model whose forward stores a tensor on itself (as some feature-caching models do)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.fc = torch.nn.Linear(4, 10)
        self.last = torch.zeros(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        self.last = y
        return self.fc(y.mean((2, 3)))


def test_analysis_leaves_no_proxies_or_fake_tensors_behind() -> None:
    from harden.summary import model_facts

    model = harden.apply(CachesItsFeatures(), ["upsample:factor=2", "strides:pattern=1"], input_size=8)
    model_facts(model)
    assert type(model.net.last) is torch.Tensor
    model.eval()(torch.rand(1, 3, 8, 8))
    assert model.net.last.shape == (1, 4, 16, 16)
