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
from tests.helpers import logits, shapes

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import tiny_cnn  # noqa: E402

ARGS = ["--input-size", "32", "--num-classes", "10"]
# torchvision's DenseNet class at a small size: concatenations without densenet121's cost
DENSENET = "torchvision.models.densenet:DenseNet"
DENSENET_KWARGS = {"growth_rate": 8, "block_config": [2, 2, 2, 2], "num_init_features": 16, "bn_size": 2}


def stages_of(model: harden.HardenedModel):
    traced = trace_with_shapes(model.net, model.net_input_size())
    head = find_head(traced)
    return find_stages(traced, head=head), head




# ------------------------------------------------------------------------------------------ stages


def test_stages_of_a_bottleneck_resnet() -> None:
    stages, head = stages_of(harden.load_model("tv:resnet50", num_classes=10, input_size=32))
    assert [s.level for s in stages] == [1, 2, 3, 4, 5]
    assert [s.size for s in stages] == [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
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

    entry = out.provenance.transforms[-1]
    groups = {g["root"]: g for g in entry.state["groups"]}
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
    text = "\n".join(entry.changes)
    assert "512 -> 256 channels" in text and "fc: input 512 -> 256" in text and "parameters" in text
    assert old.fc.in_features == 512, "apply must not change its input"


@pytest.mark.parametrize("spec, stage, head, layer, after", [
    ("tv:resnet50", ("layer4.",), ("fc.",), "fc", 1024),
    ("tv:mobilenet_v3_small", tuple(f"features.{i}." for i in range(9, 13)), ("classifier.0.",),
     "classifier.0", 288),
    (DENSENET, ("features.denseblock4.", "features.norm5."), ("classifier.",), "classifier", 16 + 2 * 4),
    ("timm:efficientnet_b0", ("blocks.5.", "blocks.6.", "conv_head.", "bn2."), ("classifier.",),
     "classifier", 640),
    ("timm:regnety_008", ("s4.",), ("head.fc.",), "head.fc", 384),
    ("timm:resnet18", ("layer4.",), ("fc.",), "fc", 256),
])
def test_last_stage_width_on_several_models(spec: str, stage: tuple[str, ...], head: tuple[str, ...], layer: str,
                                            after: int, tmp_path: Path) -> None:
    kwargs = DENSENET_KWARGS if spec == DENSENET else None
    model = harden.load_model(spec, num_classes=10, input_size=32, model_kwargs=kwargs)
    out = harden.apply(model, ["last-stage-width:ratio=0.5"])
    old_mods, new_mods = dict(model.net.named_modules()), dict(out.net.named_modules())
    groups = out.provenance.transforms[-1].state["groups"]
    assert groups
    for g in groups:  # every coupled group keeps half of its channels (all widths here are even)
        assert new_mods[g["root"]].out_channels == g["channels"] // 2 == g["channels"] - len(g["removed"])
    convs = [p for p, m in old_mods.items() if isinstance(m, nn.Conv2d) and (p + ".").startswith(stage)]
    assert convs
    for path in convs:  # every conv of the last stage got narrower, to half its width
        assert new_mods[path].out_channels == old_mods[path].out_channels // 2, path
    # only the last stage and the input of the layer after it change (DenseNet: the 16 channels
    # from transition3 stay, the 2 layers of denseblock4 add 4 instead of 8 channels each)
    changed = {k for k, s in shapes(out.net).items() if shapes(model.net)[k] != s}
    assert changed and all(k.startswith(stage + head) for k in changed), sorted(changed)[:5]
    fc = new_mods[layer]
    assert getattr(fc, "in_features", getattr(fc, "in_channels", None)) == after
    assert getattr(fc, "out_features", getattr(fc, "out_channels", None)) == getattr(
        old_mods[layer], "out_features", getattr(old_mods[layer], "out_channels", None))
    x = torch.rand(2, 3, 32, 32)
    y = logits(out, x)
    assert y.shape == (2, 10) and torch.isfinite(y).all()
    path = tmp_path / "m.safetensors"
    harden.save(out, path)
    back = harden.load(path, trust_code=spec == DENSENET)
    assert torch.equal(logits(back, x), y)


def test_ratio_one_is_a_no_op_and_leaves_logits_identical() -> None:
    model = harden.load_model("timm:resnet18", num_classes=10, input_size=32)
    out = harden.apply(model, ["last-stage-width:ratio=1"])
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(logits(out, x), logits(model, x))
    assert shapes(out) == shapes(model) and out.provenance.transforms[-1].state == {"groups": []}


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
    state = out.provenance.transforms[-1].state
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


class _Cache(nn.Module):
    """Keeps a tensor from its forward, as some layers cache masks or embeddings."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.detach().mean()
        return x


def test_a_layer_caching_tensors_during_forward_keeps_real_tensors() -> None:
    from torch._subclasses.fake_tensor import FakeTensor

    net = tiny_cnn()
    net.insert(3, _Cache())
    model = harden.wrap(net, input_size=32)
    parse_transform("last-stage-width:ratio=0.5").apply(model)  # the transform alone, in place
    assert net[7].out_channels == 32 and net[12].in_features == 32
    assert isinstance(net[3].seen, torch.Tensor) and not isinstance(net[3].seen, FakeTensor)
    assert torch.isfinite(logits(model, torch.rand(2, 3, 32, 32))).all()
