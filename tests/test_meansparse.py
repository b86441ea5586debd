"""meansparse: the operator, its sites, calibration replayed exactly by `load`, straight-through gradients (BPDA)."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from harden_plugins.meansparse import MeanSparse, Sparsified
from torch import nn

import harden
from harden.bpda import StraightThrough, straight_through, straight_through_modules
from harden.cli import main
from harden.errors import HardenError, UsageError
from harden.graph.activation_inputs import find_activation_inputs
from tests.user_models import tiny_resnet

TINY = ["tests.user_models:tiny_resnet", "--input-size", "16"]
CALIBRATE = "meansparse:data=sample,n=24"


def _op(mean: list[float], std: list[float], alpha: float) -> MeanSparse:
    op = MeanSparse(len(mean), alpha=alpha)
    op.mean.copy_(torch.tensor(mean))
    op.std.copy_(torch.tensor(std))
    return op


def _tiny() -> harden.HardenedModel:
    torch.manual_seed(0)
    return harden.wrap(tiny_resnet(), input_size=16)


def _ops(model: nn.Module) -> list[MeanSparse]:
    return [m for m in model.modules() if isinstance(m, MeanSparse)]


def test_the_operator_on_a_hand_checked_tensor() -> None:
    op = _op([0.0, 1.0], [1.0, 2.0], 0.5)  # thresholds 0.5 and 1.0 around 0 and 1
    x = torch.tensor([[0.4, -0.6, 0.5], [1.5, 2.0, -0.5]]).view(1, 2, 1, 3)
    want = torch.tensor([[0.0, -0.6, 0.5], [1.0, 2.0, -0.5]]).view(1, 2, 1, 3)
    assert torch.equal(op(x), want)  # a deviation equal to the threshold is kept
    assert torch.equal(MeanSparse(2, alpha=0.5)(x), x)  # before calibration (std 0): the identity
    assert torch.equal(_op([0.0, 1.0], [1.0, 2.0], 0.0)(x), x)  # alpha 0: the identity


def test_calibration_gives_the_population_mean_and_std_per_channel() -> None:
    op = MeanSparse(3, alpha=0.25)
    x = torch.randn(5, 3, 4, 4) * torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1) + 1
    op.start_calibration()
    assert torch.equal(op(x[:2]), x[:2]) and torch.equal(op(x[2:]), x[2:])  # values pass through meanwhile
    assert op.finish_calibration() == 5 * 16
    assert torch.allclose(op.mean, x.mean(dim=(0, 2, 3)), atol=1e-6)
    assert torch.allclose(op.std, x.std(dim=(0, 2, 3), unbiased=False), atol=1e-6)


def test_sites_in_a_resnet_only_where_batchnorm_feeds_an_activation() -> None:
    model = harden.load_model("cifar:resnet18", num_classes=10)
    found = find_activation_inputs(model.net, model.net_input_size())
    paths = [site.path for site in found.inputs]
    # the stem and each block's first BN feed a ReLU; bn2 feeds the residual sum, the shortcut's BN too
    assert paths == ["bn1"] + [f"layer{s}.{b}.bn1" for s in range(1, 5) for b in range(2)]
    assert found.inputs[1].shape == (64, 32, 32) and found.inputs[-1].shape == (512, 4, 4)
    assert not found.fused and not found.shared


def test_apply_on_a_one_channel_model_with_functional_and_module_activations() -> None:
    class OneChannel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.block = nn.Sequential(nn.Conv2d(4, 6, 3, stride=2), nn.BatchNorm2d(6), nn.Dropout(0.1), nn.ReLU())
            self.head = nn.Linear(6, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.block(torch.relu(self.bn(self.conv(x))))
            return self.head(x.mean(dim=(2, 3)))

    model = harden.wrap(OneChannel(), input_size="1x28x28", mean=[0.286], std=[0.353])
    hardened = harden.apply(model, ["meansparse:data=sample:fashion-mnist,n=16"])
    entry = hardened.provenance.transforms[0]
    assert [s["path"] for s in entry.state["sites"]] == ["bn", "block.1"]  # through the dropout
    assert [s["channels"] for s in entry.state["sites"]] == [4, 6]
    assert entry.state["calibration"]["n"] == 16
    assert isinstance(hardened.net.block[1], Sparsified) and all(float(op.std.min()) > 0 for op in _ops(hardened))


def test_layers_by_path_fused_activations_and_shared_outputs() -> None:
    from timm.layers import BatchNormAct2d

    net = nn.Sequential(nn.Conv2d(3, 4, 3), BatchNormAct2d(4), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Flatten(),
                        nn.LazyLinear(3))
    net(torch.zeros(1, 3, 8, 8))
    found = find_activation_inputs(net, (3, 8, 8))
    assert [s.path for s in found.fused] == ["1.act"] and not found.inputs
    by_path = find_activation_inputs(net, (3, 8, 8), lambda path, m: path == "2")
    assert [s.path for s in by_path.inputs] == ["2"] and not by_path.fused
    found = find_activation_inputs(_tiny().net, (3, 16, 16), lambda path, m: path in ("bn0", "conv2"))
    assert [s.path for s in found.inputs] == ["bn0"] and not found.shared  # conv2 feeds no activation
    hardened = harden.apply(_tiny(), [CALIBRATE + ",layers=bn1|stem"])
    assert [s["path"] for s in hardened.provenance.transforms[0].state["sites"]] == ["bn1"]


def test_calibration_is_deterministic_and_load_replays_it_exactly(tmp_path) -> None:
    first, second = harden.apply(_tiny(), [CALIBRATE]), harden.apply(_tiny(), [CALIBRATE])
    for a, b in zip(_ops(first), _ops(second), strict=True):
        assert torch.equal(a.mean, b.mean) and torch.equal(a.std, b.std)
    other = harden.apply(_tiny(), [CALIBRATE + ",seed=1"])
    assert not torch.equal(_ops(first)[0].mean, _ops(other)[0].mean)
    path = tmp_path / "ms.safetensors"
    harden.save(first, path)
    loaded = harden.load(path, base=tiny_resnet())
    x = torch.rand(8, 3, 16, 16)
    first.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), first(x))
    assert [float(op.alpha) for op in _ops(loaded)] == [0.25, 0.25]
    assert torch.equal(_ops(loaded)[1].std, _ops(first)[1].std)


def test_the_operator_changes_the_logits_of_a_calibrated_model() -> None:
    base = _tiny().eval()
    hardened = harden.apply(base, [CALIBRATE + ",alpha=1"]).eval()
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        assert not torch.equal(hardened(x), base(x))
        assert torch.equal(harden.apply(base, [CALIBRATE + ",alpha=0"]).eval()(x), base(x))


def test_straight_through_gradients_are_the_identitys() -> None:
    op = _op([0.0, 1.0], [1.0, 2.0], 0.5)
    x = torch.tensor([[0.4, -0.6, 0.5], [1.5, 2.0, -0.5]]).view(1, 2, 1, 3).requires_grad_()
    w = torch.arange(1.0, 7.0).view(1, 2, 1, 3)
    (grad,) = torch.autograd.grad((op(x) * w).sum(), x)
    kept = torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 1.0]]).view(1, 2, 1, 3)
    assert torch.equal(grad, w * kept)  # zero where the operator gives the mean
    with straight_through(op) as count:
        out = op(x)
        (grad,) = torch.autograd.grad((out * w).sum(), x)
    assert count == 1 and torch.equal(grad, w) and torch.equal(out.detach(), op(x).detach())
    (grad,) = torch.autograd.grad((op(x) * w).sum(), x)
    assert torch.equal(grad, w * kept)  # the hooks are gone after the block


def test_straight_through_on_a_whole_model_keeps_its_outputs() -> None:
    hardened = harden.apply(_tiny(), [CALIBRATE + ",alpha=1"]).eval()
    assert harden.list_transforms()["meansparse"].inserts_straight_through
    assert [p for p, _ in straight_through_modules(hardened)] == ["net.bn0.meansparse", "net.bn1.meansparse"]
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    plain = torch.autograd.grad(hardened(x).sum(), x)[0]
    with straight_through(hardened) as count:
        out = hardened(x)
        bpda = torch.autograd.grad(out.sum(), x)[0]
    assert count == 2 and torch.equal(out, hardened(x)) and not torch.equal(plain, bpda)
    with straight_through(tiny_resnet()) as none:
        assert none == 0


def test_a_straight_through_module_must_keep_the_shape() -> None:
    class Halve(StraightThrough):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :1]

    halve = Halve()
    with straight_through(halve), pytest.raises(HardenError, match="maps .* shaped like its input"):
        halve(torch.zeros(1, 2))


def test_cli_shorthands_write_a_file_that_loads_exactly(tmp_path) -> None:
    out = tmp_path / "m.safetensors"
    res = CliRunner().invoke(main, ["apply", *TINY, "--meansparse", "0.3", "--calibrate", "sample",
                                    "--calibrate-n", "16", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "meansparse:alpha=0.3,data=sample,n=16" in res.output and "BPDA" in res.output
    loaded = harden.load(out, trust_code=True)
    assert [float(op.alpha) for op in _ops(loaded)] == pytest.approx([0.3, 0.3])
    assert all(float(op.std.min()) > 0 for op in _ops(loaded))


@pytest.mark.parametrize("args, text", [
    (["--meansparse", "0.2"], "meansparse needs training images for its statistics: --calibrate DATA"),
    (["--calibrate", "sample"], "--calibrate goes with --meansparse, which was not given"),
    (["--meansparse", "-1", "--calibrate", "sample"], "bad alpha=-1.0: must be >= 0"),
    (["--meansparse", "nan", "--calibrate", "sample"], "bad value 'nan' for 'alpha'"),
    (["--meansparse", "0.2", "--calibrate", "nope"], "unknown data source 'nope'"),
    (["--meansparse", "0.2", "--calibrate", "sample", "--calibrate-n", "0"], "bad n=0: must be at least 1"),
    (["-t", "meansparse:data=sample,layers=fc*"], "no layer matching 'fc*' of tests.user_models:tiny_resnet feeds"),
    (["-t", CALIBRATE, "-t", CALIBRATE], "already has MeanSparse operators"),
])
def test_bad_input_is_one_line(args: list[str], text: str) -> None:
    res = CliRunner().invoke(main, ["apply", *TINY, *args])
    assert res.exit_code == 2, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and text in errors[0] and "Traceback" not in res.output


def test_a_model_without_sites_and_a_damaged_state_are_refused() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 10))
    with pytest.raises(UsageError, match="no BatchNorm layer .* feeds an activation; choose layers by path"):
        harden.apply(net, [CALIBRATE], input_size=16)
    hardened = harden.apply(net, [CALIBRATE + ",layers=0"], input_size=16)  # a conv's output, chosen by path
    assert isinstance(hardened.net[0], Sparsified)
    prov = harden.provenance_of(hardened)
    prov.transforms[0].state = {"sites": [{**prov.transforms[0].state["sites"][0], "path": "9"}]}
    with pytest.raises(HardenError, match="has no layer '9'"):
        harden.pipeline.rebuild(prov, base=net)


def test_the_alpha_sweep_attacks_each_threshold_with_bpda_and_zero_is_the_model_as_it_was() -> None:
    from harden_plugins.meansparse import sweep_alpha

    model = _tiny()
    rows = sweep_alpha(model, "sample", (0.0, 0.5), eps="8/255", n=16, attack="pgd", calibrate_n=24)
    assert [r["alpha"] for r in rows] == [0.0, 0.5] and all(r["split"] == "train" and r["n"] == 16 for r in rows)
    base = harden.evaluate(model, "sample", attack="pgd", eps="8/255", n=16, split="train", random_subset=True,
                           seed=1)
    assert rows[0]["clean_acc"] == base.clean_acc and rows[0]["robust_acc"] == base.robust_acc  # the identity
    for r in rows:  # both attacks ran, and the figure is the lower per image
        assert r["robust_acc"] <= min(r["as_is_acc"], r["bpda_acc"]) + 1e-9
