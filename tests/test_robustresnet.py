"""RobustResNets (Huang et al., CVPR 2023): block wiring, paper sizes, RobustScaling and `harden scale`."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch.utils.flop_counter import FlopCounterMode

import harden
from harden.cli import main
from harden.errors import UsageError
from harden.sources.zoo import build
from harden.sources.zoo.robustresnet import CONFIGS, RobustResBlock, RobustResNet
from harden.sources.zoo.scaling import config_for_scale, count_cost, parse_flops, robust_scaling
from harden.summary import model_facts

PAPER = {"a1": (19.2e6, 5.11e9), "a2": (39.0e6, 10.8e9), "a3": (75.9e6, 19.9e9), "a4": (147.3e6, 39.4e9)}


def _meta_net(depths, widths, **kwargs) -> RobustResNet:
    with torch.device("meta"):
        return RobustResNet(depths, widths, **kwargs)


def _randomize_bn(module: torch.nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)


def _reference_block(b: RobustResBlock, x: torch.Tensor) -> torch.Tensor:
    """The block as the paper's code computes it, written out functionally."""
    stride = b.conv2[0].stride[0]
    shortcut = x if b.shortcut is None else b.shortcut(F.relu(b.bn1(x)))
    out = F.relu(b.bn2(b.conv1(x)))  # the authors' first 1x1 conv reads the block input itself
    xs = torch.chunk(out, b.scales, 1)
    ys = []
    for s in range(b.scales - 1):
        inp = xs[s] if s == 0 or stride > 1 else xs[s] + ys[-1]
        ys.append(F.relu(b.bn3[s](b.conv2[s](inp))))
    ys.append(xs[-1] if stride == 1 else F.avg_pool2d(xs[-1], 3, stride, 1))
    out = b.conv3(torch.cat(ys, 1))
    se_in = b.se_bn(out)
    hidden = F.relu(F.linear(se_in.mean((2, 3)), b.se.fc[0].weight))
    gate = torch.sigmoid(F.linear(hidden, b.se.fc[2].weight))
    return out + shortcut + se_in * gate[:, :, None, None]


@pytest.mark.parametrize("stride,in_planes", [(1, 320), (2, 320), (1, 64)])
def test_block_matches_the_papers_computation(stride, in_planes):
    torch.manual_seed(0)
    block = RobustResBlock(in_planes, 80, stride)
    _randomize_bn(block)
    block.eval()
    x = torch.randn(2, in_planes, 8, 8)
    with torch.no_grad():
        assert torch.allclose(block(x), _reference_block(block, x), atol=1e-4)
    assert (block.shortcut is None) == (stride == 1 and in_planes == 320)


def test_block_shapes_follow_the_paper_settings():
    block = RobustResBlock(320, 80)  # scales 8, base width 10, cardinality 4, SE reduction 64
    width = (80 * 10 // 160) * 4
    assert block.conv1.out_channels == 8 * width
    assert len(block.conv2) == 7 and all(c.groups == 4 and c.kernel_size == (3, 3) for c in block.conv2)
    assert block.conv3.out_channels == 4 * 80
    fc1, fc2 = block.se.fc[0], block.se.fc[2]
    assert (fc1.in_features, fc1.out_features) == (320, 320 // 64) and fc1.bias is None and fc2.bias is None


@pytest.mark.parametrize("name", ["a1", "a2", "a3", "a4"])
def test_parameter_counts_match_the_paper(name):
    depths, widths = CONFIGS[name]
    params = sum(p.numel() for p in _meta_net(depths, widths).parameters())
    assert abs(params - PAPER[name][0]) / PAPER[name][0] < 0.01
    # the closed form used by `harden scale` agrees exactly
    assert count_cost(depths, widths)[1] == params
    assert abs(count_cost(depths, widths)[0] - PAPER[name][1]) / PAPER[name][1] < 0.02


def test_a1_builds_for_real_through_the_source():
    built = build("robustresnet-a1", None, False, {})
    assert abs(sum(p.numel() for p in built.net.parameters()) - 19.2e6) / 19.2e6 < 0.01
    assert built.input_size == (3, 32, 32)
    assert build("wrn-a1", None, False, {}).net.blocks[0].layer[0].__class__.__name__ == "PreActBasicBlock"


@pytest.mark.parametrize("block,strides", [("robust", (1, 2, 2)), ("basic", (1, 2, 2)), ("robust", (1, 1, 2))])
def test_closed_form_cost_matches_torch_flop_counter(block, strides):
    depths, widths = (2, 1, 2), (1, 2, 1)
    net = _meta_net(depths, widths, block=block, strides=strides, num_classes=7)
    with torch.device("meta"):
        counter = FlopCounterMode(display=False)
        with counter:
            net(torch.empty(1, 3, 32, 32))
    macs, params = count_cost(depths, widths, block=block, strides=strides, num_classes=7)
    assert macs == counter.get_total_flops() // 2
    assert params == sum(p.numel() for p in net.parameters())


def test_tiny_custom_network_runs_traces_and_takes_stride_transforms():
    model = harden.load_model("cifar:robustresnet-custom", model_kwargs={"depths": [1, 1, 1], "widths": [1, 1, 1]})
    assert model.provenance.model.kwargs == {"depths": [1, 1, 1], "widths": [1, 1, 1], "block": "robust"}
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert model_facts(model).feature_map == (8, 8)
    wider = harden.apply(model, ["strides:pattern=112"])  # stage 2 no longer downsamples
    assert model_facts(wider).feature_map == (16, 16)
    block = wider.net.blocks[1].layer[0]
    assert block.pool is None or isinstance(block.pool, torch.nn.Identity)
    with pytest.raises(UsageError, match="depths and widths"):
        harden.load_model("cifar:robustresnet-custom")


def test_robust_scaling_rule_and_budgets():
    assert config_for_scale(5.0) == ((14, 14, 7), (5, 7, 3))
    a1 = robust_scaling(5e9)
    assert (a1.depths, a1.widths) == CONFIGS["a1"]
    near = robust_scaling(10e9)
    depths, widths = CONFIGS["a2"]
    assert all(abs(a - b) <= 1 for a, b in zip(near.depths + near.widths, depths + widths))
    assert abs(near.macs / 10e9 - 1) < 0.1
    bigger = robust_scaling(20e9)
    assert sum(bigger.depths) > sum(near.depths) and sum(bigger.widths) > sum(near.widths)
    assert parse_flops("10G") == 10e9 and parse_flops("500M") == 5e8 and parse_flops("5e9") == 5e9
    with pytest.raises(UsageError):
        parse_flops("ten")


def test_scale_command_prints_and_builds_a_rebuildable_model(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["scale", "--flops", "10G"])
    assert result.exit_code == 0, result.output
    assert "robustresnet-a2" in result.output and "depth" in result.output
    out = tmp_path / "small.safetensors"
    result = runner.invoke(main, ["scale", "--flops", "0.1G", "--block", "basic", "--build", "-o", str(out)])
    assert result.exit_code == 0, result.output
    rec = harden.serialization.read_provenance(out)
    assert rec.model.spec == "cifar:robustresnet-custom"
    plan = robust_scaling(0.1e9, block="basic")
    assert rec.model.kwargs == {"depths": list(plan.depths), "widths": list(plan.widths), "block": "basic"}
    loaded = harden.load(out)
    assert sum(p.numel() for p in loaded.parameters()) == plan.params
    result = runner.invoke(main, ["scale", "--flops", "10G", "--build"])
    assert result.exit_code == 2 and "-o" in result.output
