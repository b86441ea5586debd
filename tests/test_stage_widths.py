"""The stage-widths transform: WRN-34-10 -> WRN-34-R, growing and shrinking stages, replay, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import harden
from harden.cli import main
from harden.errors import HardenError, UsageError
from harden.transforms import parse_transform
from tests.helpers import calibrated, logits, shapes


def widths(net: nn.Module, names: list[str]) -> list[int]:
    return [net.get_submodule(n).out_channels for n in names]


# ------------------------------------------------------------------------------------------ WRN-34-R


def test_wrn_34_10_becomes_wrn_34_r() -> None:
    model = harden.load_model("cifar:wrn-34-10", num_classes=10, input_size=32)
    assert sum(p.numel() for p in model.parameters()) == 46_160_474
    applied = parse_transform("stage-widths:widths=2/2/0.8").apply(model)  # in place: no copy of 46M
    net = model.net
    assert net.conv1.out_channels == 16
    for block, width in (("block1", 320), ("block2", 640), ("block3", 512)):
        for i in range(5):
            layer = net.get_submodule(f"{block}.layer.{i}")
            assert layer.conv1.out_channels == layer.conv2.out_channels == layer.bn2.num_features == width
    assert net.block1.layer[0].conv1.in_channels == 16 and net.block1.layer[0].bn1.num_features == 16
    assert net.block3.layer[0].conv1.in_channels == 640 and net.bn1.num_features == 512
    assert net.fc.in_features == 512 and net.fc.out_features == 10
    params = sum(p.numel() for p in model.parameters())
    assert abs(params - 68.1e6) / 68.1e6 < 0.01, params  # Huang et al. 2021, Table 4: WRN-34-R 68.1M
    text = "\n".join(applied.changes)
    assert "block1.layer.0.conv1: out 160 -> 320 (160 new filters)" in text
    assert ("block3.layer.0.conv1: in 320 -> 640 (new input columns zero), "
            "out 640 -> 512 (128 filters removed)") in text
    assert "fc: in 640 -> 512 (128 inputs removed)" in text
    assert ": x2, 160 -> 320 channels" in text and ": x0.8, 640 -> 512 channels" in text
    # replay only needs the new sizes when growing, the kept channels when shrinking
    assert {g["new"] for g in applied.state["grow"]} == {320, 640}
    assert all(len(g["kept"]) == 512 for g in applied.state["shrink"]) and applied.state["shrink"]


# -------------------------------------------------------------------------------------- a small WRN


def test_small_wrn_grows_and_shrinks_and_round_trips(tmp_path: Path) -> None:
    model = calibrated("cifar:wrn-16-2")
    old = model.net
    out = harden.apply(model, ["stage-widths:widths=2/2/0.5"])
    net = out.net
    assert net.conv1.out_channels == 16
    for block, width in (("block1", 64), ("block2", 128), ("block3", 64)):
        convs = [f"{block}.layer.0.conv1", f"{block}.layer.1.conv2", f"{block}.layer.0.convShortcut"]
        assert widths(net, convs) == [width] * 3, block
    assert net.block2.layer[0].conv1.in_channels == 64 and net.fc.in_features == 64
    assert net.bn1.num_features == 64
    # growing keeps the old weights in place, adds small new filters and zero input columns
    w_old, w_new = old.block1.layer[0].conv2.weight, net.block1.layer[0].conv2.weight
    assert torch.equal(w_new[:32, :32], w_old)
    assert torch.count_nonzero(w_new[:32, 32:]) == 0
    assert 0 < w_new[32:].std() < 0.05 * w_old.std()
    bn_old, bn_new = old.block1.layer[0].bn2, net.block1.layer[0].bn2
    assert torch.equal(bn_new.running_mean[:32], bn_old.running_mean)
    assert torch.equal(bn_new.weight[32:], torch.ones(32))
    assert torch.equal(bn_new.running_var[32:], torch.ones(32))
    # shrinking keeps the largest-L1 filters of a group with a single producer
    entry = out.provenance.transforms[-1]
    kept = {g["root"]: g["kept"] for g in entry.state["shrink"]}
    l1 = old.block3.layer[1].conv1.weight.abs().sum((1, 2, 3))
    assert kept["block3.layer.1.conv1"] == sorted(torch.topk(l1, 64).indices.tolist())
    residual = kept["block3.layer.0.conv2"]  # block3's residual stream (conv2s, convShortcut, bn1s, fc)
    expected = old.block3.layer[1].conv1.weight[kept["block3.layer.1.conv1"]][:, residual]
    assert torch.equal(net.block3.layer[1].conv1.weight, expected)
    assert torch.equal(net.fc.weight, old.fc.weight[:, residual])
    x = torch.rand(4, 3, 32, 32)
    y = logits(out, x)
    assert y.shape == (4, 10) and torch.isfinite(y).all()
    path = tmp_path / "m.safetensors"
    harden.save(out, path)
    back = harden.load(path)
    assert shapes(back) == shapes(out) and torch.equal(logits(back, x), y)


def test_growing_only_keeps_the_function() -> None:
    model = calibrated("cifar:wrn-16-2")
    out = harden.apply(model, ["stage-widths:widths=2x1.5x3"])
    assert out.net.block3.layer[0].conv2.out_channels == 384
    assert out.net.block2.layer[0].conv1.out_channels == 96
    assert sum(p.numel() for p in out.parameters()) > 4 * sum(p.numel() for p in model.parameters())
    x = torch.rand(8, 3, 32, 32)
    before, after = logits(model, x), logits(out, x)
    assert before.abs().max() > 0.1
    assert (after - before).abs().max() <= 1e-5 * before.abs().max()
    assert not any(g.get("kept") for g in out.provenance.transforms[-1].state["shrink"])


def test_factors_one_leave_logits_identical() -> None:
    model = calibrated("cifar:wrn-16-2")
    out = harden.apply(model, ["stage-widths:widths=1/1/1"])
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(logits(out, x), logits(model, x)) and shapes(out) == shapes(model)
    assert out.provenance.transforms[-1].state == {"shrink": [], "grow": []}


def test_replay_with_a_state_that_does_not_fit() -> None:
    model = harden.load_model("cifar:wrn-16-2", num_classes=10, input_size=32)
    state = harden.apply(model, ["stage-widths:widths=2/1/1"]).provenance.transforms[-1].state
    other = harden.load_model("cifar:wrn-16-1", num_classes=10, input_size=32)
    with pytest.raises(HardenError, match="does not fit"):
        parse_transform("stage-widths:widths=2/1/1").replay(other, state)


# ------------------------------------------------------------------------------------ other networks


def test_tv_resnet18_has_four_stages() -> None:
    model = calibrated("tv:resnet18")
    with pytest.raises(UsageError, match=r"3 factors given but tv:resnet18 has 4 stages .*stage 1 \(level 2"):
        harden.apply(model, ["stage-widths:widths=2/2/2"])
    out = harden.apply(model, ["stage-widths:widths=2/1/0.5/1.5"])
    net = out.net
    # layer1 has no downsampling shortcut: its residual stream is the stem's output, which widens with it
    assert net.conv1.out_channels == 128 and net.bn1.num_features == 128
    assert widths(net, ["layer1.0.conv1", "layer1.1.conv2"]) == [128, 128]
    assert widths(net, ["layer2.0.conv1", "layer2.0.downsample.0", "layer2.1.conv2"]) == [128] * 3
    assert net.layer2[0].conv1.in_channels == 128
    assert widths(net, ["layer3.0.conv1", "layer3.1.conv2"]) == [128, 128]
    assert widths(net, ["layer4.0.conv1", "layer4.1.conv2"]) == [768, 768] and net.fc.in_features == 768
    x = torch.rand(2, 3, 32, 32)
    assert torch.isfinite(logits(out, x)).all()
    rebuilt = harden.pipeline.rebuild(out.provenance)
    assert shapes(rebuilt) == shapes(out)


class _Block(nn.Module):
    """Expand 1x1 + GroupNorm, depthwise 3x3, project 1x1, plus a grouped 3x3 on the residual stream.

    With ``grouped_norm`` the projection is a grouped conv followed by a GroupNorm instead.
    """

    def __init__(self, width: int, grouped_norm: bool = False) -> None:
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(width, 2 * width, 1, bias=False), nn.GroupNorm(4, 2 * width),
                                    nn.ReLU())
        self.depthwise = nn.Sequential(nn.Conv2d(2 * width, 2 * width, 3, padding=1, groups=2 * width),
                                       nn.BatchNorm2d(2 * width), nn.ReLU())
        self.project = nn.Conv2d(2 * width, width, 1, groups=4 if grouped_norm else 1)
        self.norm = nn.GroupNorm(4, width) if grouped_norm else nn.BatchNorm2d(width)
        self.mix = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, groups=4), nn.BatchNorm2d(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.norm(self.project(self.depthwise(self.expand(x))))
        return x + self.mix(x)


class _PoolNet(nn.Module):
    """The residual stream runs through an average pooling: both stages share its channels."""

    def __init__(self, grouped_norm: bool = False) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.stage1 = _Block(16, grouped_norm)
        self.pool = nn.AvgPool2d(2)
        self.stage2 = _Block(16, grouped_norm)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage2(self.pool(self.stage1(self.stem(x)))))


def test_depthwise_grouped_and_group_norm_grow_exactly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = _PoolNet()
    net.train()
    with torch.no_grad():
        net(torch.rand(8, 3, 32, 32))
    model = harden.wrap(net, input_size=32)
    with pytest.raises(UsageError, match=r"shared by stage 0 \(x2\), stage 1 \(x1\)"):
        harden.apply(model, ["stage-widths:widths=2/1"])
    out = harden.apply(model, ["stage-widths:widths=2/2"])
    big = out.net
    assert big.stem.out_channels == 32 and big.head[2].in_features == 32  # the shared residual stream
    assert big.stage1.depthwise[0].groups == big.stage1.depthwise[0].out_channels == 64
    assert big.stage2.mix[0].groups == 4 and big.stage2.mix[0].weight.shape[:2] == (32, 8)
    assert big.stage2.expand[1].num_channels == 64
    assert big.stage2.expand[1].num_groups == 8  # whole new groups
    # a grouped conv grows every group alike: old filters of group 1 (rows 4..7) move to rows 8..11
    assert torch.equal(big.stage1.mix[0].weight[8:12, :4], net.stage1.mix[0].weight[4:8])
    assert torch.count_nonzero(big.stage1.mix[0].weight[8:12, 4:]) == 0
    x = torch.rand(4, 3, 32, 32)
    before, after = logits(model, x), logits(out, x)
    assert (after - before).abs().max() <= 1e-5 * before.abs().max()
    path = tmp_path / "m.safetensors"
    harden.save(out, path)
    back = harden.load(path, base=_PoolNet())
    assert torch.equal(logits(back, x), after)
    # a grouped conv feeding a GroupNorm would need two different layouts of the new channels
    with pytest.raises(HardenError, match="grouped convolution and a GroupNorm"):
        harden.apply(harden.wrap(_PoolNet(grouped_norm=True), input_size=32), ["stage-widths:widths=2/2"])


# ------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("bad", ["0/1/1", "1/-1/1", "abc", "2/2/x", "", "nan/1/1"])
def test_bad_factors_are_usage_errors(bad: str) -> None:
    with pytest.raises(UsageError, match="widths"):
        parse_transform(f"stage-widths:widths={bad}")


def test_spec_round_trips_in_canonical_form() -> None:
    t = parse_transform("stage-widths:widths=2x2x0.80")
    assert t.spec() == "stage-widths:widths=2/2/0.8"
    assert parse_transform(t.spec()).config == t.config


def test_cli_applies_and_rejects_bad_factors(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "out.safetensors"
    res = runner.invoke(main, ["apply", "cifar:wrn-16-2", "--stage-widths", "2,2,0.5", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "transform stage-widths:widths=2/2/0.5" in res.output
    assert "block1.layer.0.conv1: out 32 -> 64 (32 new filters)" in res.output
    assert harden.load(out).net.fc.in_features == 64
    for bad, expect in (("2,2", "has 3 stages"), ("0,1,1", "positive"), ("-1,1,1", "positive"),
                        ("abc", "not a number"), ("1,1,1,1", "4 factors")):
        res = runner.invoke(main, ["apply", "cifar:wrn-16-2", "--stage-widths", bad])
        assert res.exit_code == 2, (bad, res.output)
        assert expect in res.output and "Traceback" not in res.output


def test_vit_gives_one_clear_line() -> None:
    res = CliRunner().invoke(main, ["apply", "timm:vit_tiny_patch16_224", "--input-size", "32",
                                    "--num-classes", "10", "--stage-widths", "2"])
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "no convolutional stages" in lines[0] and "CNN" in lines[0]
