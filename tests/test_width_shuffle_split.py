"""Width transforms on channel shuffles (ShuffleNet-v2) and mixed-kernel convolutions (MixNet)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from timm.layers import MixedConv2d
from torch import nn

import harden
from harden.channels.flow import follow
from harden.channels.flow_groups import analyse, flow_analysis, plan_group, recorded_classes
from harden.cli import main
from harden.errors import HardenError
from harden.graph import trace_with_shapes
from tests.helpers import calibrated, logits

SHUFFLENET = "tv:shufflenet_v2_x1_0"
X = torch.rand(2, 3, 32, 32)



def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def assert_sub_network(original: harden.HardenedModel, narrowed: harden.HardenedModel, classifier: str) -> None:
    """Every kept channel still meets the weights it met before: the narrowed network computes what the
    original computes with the removed channels silenced (their filters, norm and depthwise entries 0)."""
    masked, narrowed = copy.deepcopy(original), copy.deepcopy(narrowed)
    analysis = flow_analysis(masked.net, masked.net_input_size(), "test")
    assert analysis is not None
    removed = recorded_classes(analysis, removed_filters(narrowed.provenance.transforms[-1].state), "test")
    layers = dict(masked.net.named_modules())
    with torch.no_grad():
        for cls in removed:
            for slot in analysis.members[cls]:
                layer = layers[slot.layer]
                if slot.kind != "in":
                    layer.weight[slot.index] = 0
                    if layer.bias is not None:
                        layer.bias[slot.index] = 0
    kept = sorted(s.index for c, slots in analysis.members.items() if c not in removed
                  for s in slots if s.layer == classifier and s.kind == "in")
    for model in (masked, narrowed):  # compare the features the classifier reads
        model.net.set_submodule(classifier, nn.Identity())
    before, after = logits(masked, X), logits(narrowed, X)
    assert after.shape[1] == len(kept) < before.shape[1] and before[:, kept].abs().max() > 0.01
    assert torch.allclose(after, before[:, kept], atol=1e-6)


def removed_filters(state: dict) -> list[dict]:
    """The removed filters per layer of a last-stage-width or stage-widths state."""
    if "groups" in state:
        return state["groups"]
    return [{"root": e["root"], "channels": e["channels"],
             "removed": sorted(set(range(e["channels"])) - set(e["kept"]))} for e in state["shrink"]]


def round_trip(out: harden.HardenedModel, tmp_path: Path, base: nn.Module | None = None) -> harden.HardenedModel:
    path = tmp_path / "m.safetensors"
    harden.save(out, path)
    return harden.load(path, base=base)


# --------------------------------------------------------------------------------------- ShuffleNet


@pytest.fixture(scope="module")
def shufflenet() -> harden.HardenedModel:
    return calibrated(SHUFFLENET)


def test_shufflenet_last_stage_keeps_whole_shuffle_groups(shufflenet: harden.HardenedModel, tmp_path: Path) -> None:
    out = harden.apply(shufflenet, ["last-stage-width:ratio=0.5"])
    net = out.net
    # the stage's stream (branch1 and every branch2 output, joined by concatenations, shuffles and
    # chunks) keeps 15 of every 29 channels: 232 = 8 x 29 channels per branch, 464 in the stream
    for block in range(4):
        assert net.stage4[block].branch2[5].out_channels == 120
        assert net.stage4[block].branch2[0].out_channels == 116  # a branch's inner channels: half
    assert net.stage4[0].branch1[2].out_channels == 120 and net.conv5[0].in_channels == 240
    assert net.conv5[0].out_channels == 512 and net.fc.in_features == 512
    assert net.stage3[0].branch2[5].out_channels == 116, "earlier stages are untouched"
    assert params(out) < 0.5 * params(shufflenet)
    entry = out.provenance.transforms[-1]
    assert entry.state["flow"] is True
    text = "\n".join(entry.changes)
    assert "232 -> 120 channels (in whole shuffle groups: 15 of every 29" in text and "fc: input 1024 -> 512" in text
    y = logits(out, X)
    assert y.shape == (2, 10) and torch.isfinite(y).all()
    assert torch.equal(logits(round_trip(out, tmp_path), X), y)


def test_shufflenet_narrowed_is_the_original_without_the_removed_channels(shufflenet: harden.HardenedModel) -> None:
    out = harden.apply(shufflenet, ["last-stage-width:ratio=0.5"])
    assert_sub_network(shufflenet, out, "fc")


def test_shufflenet_stage_widths_narrows_what_the_shuffles_allow(shufflenet: harden.HardenedModel,
                                                                   tmp_path: Path) -> None:
    out = harden.apply(shufflenet, ["stage-widths:widths=1/0.5/0.5"])
    net = out.net
    # stage 3 (8 blocks, 116 channels per branch) cannot narrow its stream: 116 is not a multiple of 2^7
    assert net.stage3[3].branch2[5].out_channels == 116 and net.stage3[3].branch2[0].out_channels == 58
    assert net.stage4[3].branch2[5].out_channels == 120 and net.stage2[1].branch2[0].out_channels == 58
    text = "\n".join(out.provenance.transforms[-1].changes)
    assert "116 -> 116 channels (all kept: no narrower width keeps its chunks and channel shuffles" in text
    y = logits(out, X)
    assert y.shape == (2, 10) and torch.isfinite(y).all() and params(out) < params(shufflenet)
    assert torch.equal(logits(round_trip(out, tmp_path), X), y)


def test_shufflenet_growth_is_one_clear_line() -> None:
    res = CliRunner().invoke(main, ["apply", "tv:shufflenet_v2_x0_5", "--input-size", "32", "--num-classes", "10",
                                    "--stage-widths", "1,1,2"])
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "shuffles or splits its channels" in lines[0] and "factors <= 1" in lines[0]


class _ShuffleBlock(nn.Module):
    """Chunk, a branch on one half, concatenation and a channel shuffle (a ShuffleNet-v2 unit)."""

    def __init__(self, width: int, split: list[int] | None = None) -> None:
        super().__init__()
        self.branch = nn.Sequential(nn.Conv2d(width // 2, width // 2, 1), nn.BatchNorm2d(width // 2), nn.ReLU())
        self.split = split

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.split(self.split, dim=1) if self.split else x.chunk(2, dim=1)
        x = torch.cat((a, self.branch(b)), dim=1)
        n, c, h, w = x.size()
        return x.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)


def _tiny_shufflenet(split: list[int] | None = None) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), _ShuffleBlock(16, split),
                         _ShuffleBlock(16), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


def test_the_flow_joins_shuffled_channels_and_balances_the_chunks() -> None:
    net = _tiny_shufflenet()
    flow = follow(trace_with_shapes(net, (3, 32, 32)), net)
    analysis = analyse(flow)
    assert len(flow.balances) == 2  # the two chunks
    stream = next(g for g in analysis.groups if "0" in g.producers)
    assert stream.producers == ["0", "3.branch.0", "4.branch.0"] and len(stream.classes) == 16
    # the first shuffle pairs stem channel k < 8 with the first branch's channel k; the second adds two
    # channels of the second branch to each of the pairs it keeps (k < 4); the chunked-off half of the
    # stem (k >= 8) only feeds the first branch
    filters = sorted(sum(s.kind == "out" for s in analysis.members[c]) for c in stream.classes)
    assert filters == [1] * 8 + [2] * 4 + [4] * 4
    # atoms of 4, 4 and 8 classes balance the chunks: each keeps the same fraction (2 of every 4)
    plan = plan_group(analysis, stream, 0.5)
    assert plan.unit == (2, 4) and len(plan.removed) == 8


def test_a_fixed_size_split_next_to_a_shuffle_is_one_clear_line() -> None:
    model = harden.wrap(_tiny_shufflenet(split=[8, 8]), input_size=32)
    with pytest.raises(HardenError, match=r"pass through a split of the channels into parts of fixed sizes"):
        harden.apply(model, ["last-stage-width:ratio=0.5"])


# ------------------------------------------------------------------------------------------- MixNet


class _MixNet(nn.Module):
    """A stem, then mixed-kernel convolutions (timm's MixedConv2d) at two resolutions."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU())
        self.mix1 = MixedConv2d(12, 12, [3, 5, 7], stride=2, depthwise=True)
        self.expand1 = nn.Sequential(nn.Conv2d(12, 30, 1), nn.BatchNorm2d(30), nn.ReLU())
        self.mix2 = MixedConv2d(30, 30, [3, 5], stride=2, depthwise=True)
        self.project1 = MixedConv2d(30, 20, [1, 1])
        self.expand2 = nn.Sequential(nn.Conv2d(20, 32, 1), nn.BatchNorm2d(32), nn.ReLU())
        self.mix3 = MixedConv2d(32, 32, [3, 5], depthwise=True)
        self.project2 = MixedConv2d(32, 20, [1, 1])
        self.head = nn.Sequential(nn.BatchNorm2d(20), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(20, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.project1(self.mix2(self.expand1(self.mix1(self.stem(x)))))
        return self.head(self.project2(self.mix3(self.expand2(x))))


def test_mixed_convolutions_keep_a_share_of_every_part_and_their_split_sizes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = harden.wrap(_MixNet(), input_size=32)
    out = harden.apply(model, ["last-stage-width:ratio=0.5"])
    net = out.net
    # expand2's 32 channels: split in two for mix3's kernels, then again for project2's two 1x1 convs
    assert net.expand2[0].out_channels == 16 and net.mix3.splits == [8, 8] and net.project2.splits == [8, 8]
    assert [c.out_channels for c in net.project2.values()] == [5, 5]
    assert net.project2.in_channels == 16 and net.project2.out_channels == 10 and net.head[4].in_features == 10
    assert [c.out_channels for c in net.project1.values()] == [5, 5] and net.expand2[0].in_channels == 10
    assert net.mix2.splits == [15, 15], "expand1's channels, coupled to the stage before, stay"
    text = "\n".join(out.provenance.transforms[-1].changes)
    assert "expand2.0: 32 -> 16 channels, a share of each of 2 split parts" in text
    assert "kept mix2.0 (30 channels, coupled to expand1.0 outside the last stage)" in text
    y = logits(out, X)
    assert y.shape == (2, 10) and torch.isfinite(y).all() and params(out) < params(model)
    back = round_trip(out, tmp_path, base=_MixNet())
    assert back.net.mix3.splits == [8, 8] and torch.equal(logits(back, X), y)
    assert_sub_network(model, out, "head.4")


def test_mixed_convolutions_narrow_with_stage_widths(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = harden.wrap(_MixNet(), input_size=32)
    out = harden.apply(model, ["stage-widths:widths=0.5/0.5"])
    net = out.net
    assert net.mix2.splits == [8, 8] and net.mix3.splits == [8, 8] and net.project2.splits == [8, 8]
    y = logits(out, X)
    assert y.shape == (2, 10) and torch.isfinite(y).all()
    assert torch.equal(logits(round_trip(out, tmp_path, base=_MixNet()), X), y)


class _StoredSplit(nn.Module):
    """Channels split into halves of a size kept in an int attribute, which channel removal cannot update."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.half = 8
        self.left, self.right = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.stem(x).split(self.half, dim=1)
        y = torch.cat((self.left(a), self.right(b)), dim=1)
        return self.fc(y.mean((2, 3)))


def test_a_split_size_stored_elsewhere_is_one_clear_line() -> None:
    with pytest.raises(HardenError, match="pass through a split of the channels into parts of fixed sizes"):
        harden.apply(harden.wrap(_StoredSplit(), input_size=32), ["last-stage-width:ratio=0.5"])


@pytest.mark.slow
def test_timm_mixnet_s_narrows_and_round_trips(tmp_path: Path) -> None:
    model = calibrated("timm:mixnet_s")
    for transform in ("last-stage-width:ratio=0.5", "stage-widths:widths=0.5/0.5/0.5/0.5/0.5"):
        out = harden.apply(model, [transform])
        for name, m in out.net.named_modules():
            if isinstance(m, MixedConv2d):
                assert m.splits == [c.in_channels for c in m.values()] and sum(m.splits) == m.in_channels, name
        assert out.net.blocks[5][2].conv_dw.splits == [150] * 4
        y = logits(out, X)
        assert y.shape == (2, 10) and torch.isfinite(y).all() and params(out) < 0.55 * params(model)
        assert torch.equal(logits(round_trip(out, tmp_path), X), y), transform
        assert_sub_network(model, out, "classifier")
