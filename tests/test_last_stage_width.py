"""Stage analysis (harden.graph.stages) and the last-stage-width transform."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import harden
from harden.cli import main
from harden.errors import HardenError, UsageError
from harden.graph import trace_with_shapes
from harden.graph.stages import find_head, find_stages
from harden.transforms import parse_transform

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import tiny_cnn  # noqa: E402

ARGS = ["--input-size", "32", "--num-classes", "10"]


def stages_of(model: harden.HardenedModel):
    traced = trace_with_shapes(model.net, model.net_input_size())
    head = find_head(traced)
    return find_stages(traced, head=head), head


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------------------ stages


def test_stages_of_a_bottleneck_resnet() -> None:
    stages, head = stages_of(harden.load_model("tv:resnet50", num_classes=10, input_size=64))
    assert [s.level for s in stages] == [1, 2, 3, 4, 5]
    assert [s.size for s in stages] == [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]
    assert [s.channels for s in stages] == [64, 256, 512, 1024, 2048]
    assert [s.stem for s in stages] == [True, False, False, False, False]
    last = stages[-1]
    # the 1x1 reduction before the strided 3x3 belongs to the stage it opens, not to layer3
    assert last.convs[0] == "layer4.0.conv1" and "layer4.0.conv1" not in stages[-2].layers
    assert {"layer4.0.conv2", "layer4.0.downsample.0", "layer4.2.conv3", "layer4.2.bn3"} <= set(last.layers)
    assert all(p.startswith("layer4.") for p in last.layers)
    assert head.classifier == "fc" and head.layers == ["fc"] and "fc" not in last.layers


def test_stages_keep_squeeze_excitation_inside_and_the_head_outside() -> None:
    stages, head = stages_of(harden.load_model("tv:mobilenet_v3_small", num_classes=10, input_size=32))
    last = stages[-1]
    assert head.layers == ["classifier.0", "classifier.3"] and head.classifier == "classifier.3"
    assert "features.9.block.2.fc1" in last.convs  # SE of the stride-2 block of the last stage
    assert "features.9.block.0.0" in last.convs  # the expansion before the strided depthwise conv
    assert last.convs[-1] == "features.12.0" and not set(head.layers) & set(last.layers)


def test_plain_cnn_stages_do_not_move_a_conv_before_a_strided_conv() -> None:
    stages, head = stages_of(harden.wrap(tiny_cnn(), input_size=32))
    assert [s.convs for s in stages] == [["0"], ["3"], ["6"]]
    assert [s.channels for s in stages] == [16, 32, 64] and head.classifier == "11"


# ------------------------------------------------------------------------------------ the transform


def test_resnet18_last_stage_halves_and_keeps_the_largest_l1_channels() -> None:
    model = harden.load_model("tv:resnet18", num_classes=10, input_size=32)
    out = harden.apply(model, ["last-stage-width:ratio=0.5"])
    net, old = out.net, model.net
    for name, conv in net.layer4.named_modules():
        if isinstance(conv, nn.Conv2d):
            assert conv.out_channels == 256, name
    assert net.fc.in_features == 256 and net.fc.out_features == 10
    # earlier stages are untouched, weights included
    for key, value in old.state_dict().items():
        if not key.startswith(("layer4.", "fc.")):
            assert torch.equal(net.state_dict()[key], value), key
    assert net.layer4[0].conv1.in_channels == 256  # fed by layer3's 256 channels, unchanged

    entry = out.recipe["transforms"][-1]
    groups = {g["root"]: g for g in entry["state"]["groups"]}
    assert set(groups) == {"layer4.0.conv1", "layer4.0.conv2", "layer4.1.conv1"}
    kept = {r: sorted(set(range(g["channels"])) - set(g["removed"])) for r, g in groups.items()}
    # layer4.1.conv1 is its group's only producer: its kept channels are its largest-L1 filters
    l1 = old.layer4[1].conv1.weight.abs().sum((1, 2, 3))
    assert kept["layer4.1.conv1"] == sorted(torch.topk(l1, 256).indices.tolist())
    residual = kept["layer4.0.conv2"]  # the residual stream: layer4.0.conv2, downsample, layer4.1.conv2
    expected = old.layer4[1].conv1.weight[kept["layer4.1.conv1"]][:, residual]
    assert torch.equal(net.layer4[1].conv1.weight, expected)
    assert torch.equal(net.layer4[1].bn1.running_mean, old.layer4[1].bn1.running_mean[kept["layer4.1.conv1"]])
    assert torch.equal(net.fc.weight, old.fc.weight[:, residual])
    assert torch.equal(net.layer4[0].downsample[0].weight, old.layer4[0].downsample[0].weight[residual])
    text = "\n".join(entry["changes"])
    assert "512 -> 256 channels" in text and "fc: input 512 -> 256" in text and "parameters" in text
    assert old.fc.in_features == 512, "apply must not change its input"


@pytest.mark.parametrize("spec, layer, before", [
    ("tv:resnet50", "fc", 2048),
    ("tv:mobilenet_v3_small", "classifier.0", 576),
    ("tv:densenet121", "classifier", 1024),
    ("timm:efficientnet_b0", "classifier", 1280),
    ("timm:regnety_008", "head.fc", 768),
    ("timm:resnet18", "fc", 512),
])
def test_last_stage_width_on_several_models(spec: str, layer: str, before: int, tmp_path: Path) -> None:
    model = harden.load_model(spec, num_classes=10, input_size=32)
    stages, head = stages_of(model)
    last = stages[-1]
    out = harden.apply(model, ["last-stage-width:ratio=0.5"])
    old_mods, new_mods = dict(model.net.named_modules()), dict(out.net.named_modules())
    groups = out.recipe["transforms"][-1]["state"]["groups"]
    assert groups
    for g in groups:  # every coupled group keeps half of its channels (all widths here are even)
        assert new_mods[g["root"]].out_channels == g["channels"] // 2 == g["channels"] - len(g["removed"])
    for path in last.convs:  # every conv of the last stage got narrower
        assert new_mods[path].out_channels < old_mods[path].out_channels, path
    changed = {k for k, s in shapes(out.net).items() if shapes(model.net)[k] != s}
    touched = tuple(p + "." for p in (*last.layers, *head.layers))
    assert changed and all(k.startswith(touched) for k in changed), sorted(changed)[:5]
    # the classifier (or the head layer after the stage) keeps its outputs and takes half the input
    fc = new_mods[layer]
    assert getattr(fc, "in_features", getattr(fc, "in_channels", None)) < before
    assert new_mods[head.classifier].out_features == 10
    x = torch.rand(2, 3, 32, 32)
    y = logits(out, x)
    assert y.shape == (2, 10) and torch.isfinite(y).all()
    path = tmp_path / "m.safetensors"
    harden.save(out, path)
    back = harden.load(path)
    assert torch.equal(logits(back, x), y)


def test_ratio_one_is_a_no_op_and_leaves_logits_identical() -> None:
    model = harden.load_model("timm:resnet18", num_classes=10, input_size=32)
    out = harden.apply(model, ["last-stage-width:ratio=1"])
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(logits(out, x), logits(model, x))
    assert shapes(out) == shapes(model) and out.recipe["transforms"][-1]["state"] == {"groups": []}


def test_tiny_ratio_keeps_one_channel_per_group_and_training_mode() -> None:
    model = harden.load_model("tv:resnet18", num_classes=10, input_size=32).train()
    out = harden.apply(model, ["last-stage-width:ratio=0.001"])
    assert out.net.fc.in_features == 1 and out.net.layer4[1].conv1.out_channels == 1
    assert all(m.training for m in out.modules()), "the transform must keep train/eval modes"
    assert out.net.layer3[1].conv2.out_channels == 256


def test_plain_module_and_replay_with_a_state_that_does_not_fit() -> None:
    model = harden.wrap(tiny_cnn(), input_size=32)
    out = harden.apply(model, ["last-stage-width:ratio=0.25"])
    assert out.net[6].out_channels == 16 and out.net[11].in_features == 16 and out.net[3].out_channels == 32
    fresh = harden.wrap(tiny_cnn(width=8), input_size=32)
    state = out.recipe["transforms"][-1]["state"]
    with pytest.raises(HardenError, match="does not fit"):
        parse_transform("last-stage-width:ratio=0.25").replay(fresh, state)


@pytest.mark.parametrize("bad", ["0", "1.5", "-1", "abc"])
def test_bad_ratios_are_usage_errors(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_transform(f"last-stage-width:ratio={bad}")


def test_cli_applies_and_rejects_bad_ratios(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "out.safetensors"
    res = runner.invoke(main, ["apply", "tv:resnet18", *ARGS, "--last-stage-width", "0.5", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "fc: input 512 -> 256" in res.output
    assert harden.load(out).net.fc.in_features == 256
    for bad in ("0", "1.5", "-1", "abc"):
        res = runner.invoke(main, ["apply", "tv:resnet18", *ARGS, "--last-stage-width", bad])
        assert res.exit_code == 2, (bad, res.output)
        assert "ratio" in res.output and "Traceback" not in res.output


def test_vit_gives_one_clear_line() -> None:
    res = CliRunner().invoke(main, ["apply", "timm:vit_tiny_patch16_224", *ARGS, "--last-stage-width", "0.5"])
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "no convolutional stages" in lines[0] and "CNN" in lines[0]
