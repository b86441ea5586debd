"""Tests of the activation transform (plugins/activation.py) and its analysis (harden/graph/activations.py)."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

import harden
from harden.graph import trace
from harden.serialization import read_provenance

RELU_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.RReLU, nn.PReLU)
RELU_FUNCTIONS = {F.relu, F.relu_, torch.relu, torch.relu_, F.relu6, F.leaky_relu, F.leaky_relu_, F.rrelu,
                  F.prelu, torch._C._nn.relu6, torch._C._nn.leaky_relu}
RELU_METHODS = {"relu", "relu_", "prelu"}
GATES = (nn.Sigmoid, nn.Hardsigmoid, nn.Hardswish)


def count(model: nn.Module, types: tuple[type, ...]) -> int:
    return sum(isinstance(m, types) for m in model.modules())


def relu_calls(module: nn.Module) -> list[str]:
    """Functional ReLU-family nodes in fx traces of ``module`` in eval and in train mode."""
    found = []
    for training in (False, True):
        module.train(training)
        for node in trace(module).graph.nodes:
            if (node.op == "call_function" and node.target in RELU_FUNCTIONS) or (
                    node.op == "call_method" and node.target in RELU_METHODS):
                found.append(node.name)
    module.eval()
    return found


def logits(model: nn.Module, seed: int = 0) -> torch.Tensor:
    model.eval()
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(x)


def changes(model: harden.HardenedModel) -> list[str]:
    return model.provenance.transforms[-1].changes


MODELS = ["tv:resnet18", "tv:densenet121", "tv:mobilenet_v3_small", "tv:regnet_y_400mf", "timm:resnet18",
          "timm:mobilenetv3_large_100"]


@functools.cache
def base_model(spec: str) -> harden.HardenedModel:
    return harden.load_model(spec, num_classes=10, input_size=32).eval()


@functools.cache
def silu_model(spec: str) -> harden.HardenedModel:
    return harden.apply(base_model(spec), "activation:name=silu").eval()


@pytest.fixture(scope="module", autouse=True)
def _free_models():
    yield
    silu_model.cache_clear()
    base_model.cache_clear()


def differ(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool((a - b).abs().max() > 1e-3 * a.abs().max())


@pytest.mark.parametrize("spec", MODELS)
def test_relu_family_replaced(spec):
    base, out = base_model(spec), silu_model(spec)
    relus, gates = count(base, RELU_MODULES), count(base, GATES)
    assert relus > 0
    assert count(out, RELU_MODULES) == 0
    functional = sum(int(c.split()[0]) for c in changes(out) if "functional call" in c)
    assert count(out, (nn.SiLU,)) == relus + count(base, (nn.SiLU,)) + functional
    assert count(out, GATES) == gates  # squeeze-excitation gates and hard-swish stay
    assert relu_calls(out.net) == []
    assert list(out.state_dict()) == list(base.state_dict())
    assert differ(logits(base), logits(out))
    assert any(f"{relus} module" in c and "-> SiLU" in c for c in changes(out))


@pytest.mark.parametrize("spec", ["tv:densenet121", "tv:mobilenet_v3_small"])
def test_save_load_round_trip(spec, tmp_path):
    out = silu_model(spec)
    path = tmp_path / "m.safetensors"
    harden.save(out, path)
    loaded = harden.load(path)
    assert count(loaded, RELU_MODULES) == 0
    assert torch.equal(logits(loaded), logits(out))
    assert loaded.provenance.transforms[-1].state == out.provenance.transforms[-1].state


def test_densenet_functional_relu_rewritten():
    base, out = base_model("tv:densenet121"), silu_model("tv:densenet121")
    assert relu_calls(base.net)  # DenseNet.forward has F.relu(features, inplace=True)
    assert any("1 functional call in <root> (DenseNet): relu -> SiLU" in c for c in changes(out))
    assert isinstance(out.net, torch.fx.GraphModule)
    # children are shared with the traced forward, not copied into it
    assert out.net.features is out.net.get_submodule("features")
    assert out.provenance.transforms[-1].state["functional"] == {"": ["relu"]}
    clone = copy.deepcopy(out)  # GraphModule deepcopy keeps every key and the behaviour
    assert list(clone.state_dict()) == list(base.state_dict())
    assert torch.equal(logits(clone), logits(out))


def test_train_eval_still_switch():
    out = silu_model("tv:densenet121")  # root forward is a rewritten GraphModule
    bn = out.net.features.norm5
    x = torch.rand(4, 3, 32, 32)
    out.eval()
    stats = bn.running_mean.clone()
    with torch.no_grad():
        a, b = out(x), out(x)
    assert torch.equal(a, b) and torch.equal(bn.running_mean, stats)
    out.train()
    assert out.net.training and bn.training
    with torch.no_grad():
        out(x)
    assert not torch.equal(bn.running_mean, stats)  # batch-norm statistics update in train mode only
    out.eval()

    mobile = copy.deepcopy(silu_model("tv:mobilenet_v3_small"))
    mobile.net.classifier[-1].weight.data.normal_()  # visible logits so that dropout shows
    mobile.train()
    with torch.no_grad():
        a, b = mobile(x), mobile(x)
    assert not torch.equal(a, b)  # dropout active
    mobile.eval()
    with torch.no_grad():
        assert torch.equal(mobile(x), mobile(x))


class HardSigmoid6(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.relu = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + 3) / 6


class Functional(nn.Module):
    """ReLU written every way in forward code, plus hard-sigmoid/hard-swish gates made of relu6."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.c3 = nn.Conv2d(8, 8, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.gate = HardSigmoid6()
        self.fc = nn.Linear(8, 10)
        self.register_buffer("scale", torch.tensor(0.5), persistent=False)
        self.note = "kept"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        y = self.c3(x)
        y.relu_()  # in place, result unused: later reads of y must see the activation
        z = y * F.relu6(y + 3.0) / 6  # hard-swish: a gate, left alone
        z = z * self.gate(z)
        w = F.leaky_relu(z, 0.2, inplace=True)
        self.act(w)  # in-place module whose output is ignored
        return self.fc(w.mean((2, 3)) * self.scale)


def reference(net: Functional, act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    y = act(net.c3(act(net.c2(act(net.c1(x))))))
    z = y * F.relu6(y + 3.0) / 6
    z = z * (F.relu6(z + 3) / 6)
    return net.fc(act(act(z)).mean((2, 3)) * 0.5)


def test_custom_functional_calls():
    net = Functional().eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x.clone()), reference(net, nn.ReLU(), x), atol=1e-6)
    out = harden.apply(net, "activation:name=softplus,beta=2", input_size=32)
    assert list(out.net.state_dict()) == list(net.state_dict())
    assert out.net.note == "kept" and out.net.scale.item() == 0.5
    with torch.no_grad():
        got = out.net(x)
    assert torch.allclose(got, reference(net, nn.Softplus(beta=2.0), x), atol=1e-6)
    text = "\n".join(changes(out))
    assert "4 functional calls in <root> (Functional): leaky_relu, relu, relu_ -> Softplus(beta=2.0" in text
    assert "1 module (ReLU)" in text and "kept as gates" in text
    assert count(out.net, (nn.Softplus,)) == 5
    assert isinstance(out.net.gate.relu, nn.ReLU6)  # relu6(x + 3) gate kept
    remaining = relu_calls(out.net)
    assert len(remaining) == 2 and all("relu6" in n for n in remaining)  # the hard-swish relu6(x + 3) only
    clone = copy.deepcopy(out.net)
    assert clone.note == "kept" and "scale" not in clone.state_dict()


class MutatesInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.act(x)
        return x * 2


class ReadsMutated(nn.Module):
    """The parent reads ``x`` after a child activated it in place: the rewrite cannot follow that."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 10, 3)
        self.inner = MutatesInput()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c(x)
        y = self.inner(x)
        return (x + y).mean((2, 3))


def test_in_place_reliance():
    net = ReadsMutated().eval()
    out = harden.apply(net, "activation:name=silu", input_size=32)
    assert any(c.startswith("note: in inner,") for c in changes(out))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        pre = net.c(x)
        # MutatesInput's own read of x is redirected to the activation's output; the parent's is not
        assert torch.allclose(out.net(x), (pre + 2 * F.silu(pre)).mean((2, 3)), atol=1e-6)


class MethodChild(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.relu().mean((2, 3))


class Untraceable(nn.Module):
    """fx cannot trace the root (a branch on a shape); its modules and traceable children still change."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 10, 3)
        self.act = nn.ReLU()
        self.inner = MethodChild()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.c(x))
        if x.shape[-1] > 4:
            x = torch.relu(x)
        return self.inner(x)


def test_untraceable_parts():
    net = Untraceable().eval()
    out = harden.apply(net, "activation:name=silu", input_size=32)
    text = "\n".join(changes(out))
    assert "1 module (ReLU) -> SiLU: act" in text
    assert "1 functional call in inner (MethodChild): relu -> SiLU" in text
    assert "not inspected for functional calls (untraceable forward): <root> (Untraceable)" in text
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = F.silu(F.relu(F.silu(net.c(x)))).mean((2, 3))  # the root's own torch.relu stays
        assert torch.allclose(out.net(x), expected, atol=1e-6)


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c(x)
        if self.training:
            x = F.relu(x)
        return x.mean((2, 3))


def test_training_dependent_forward_refused():
    with pytest.raises(harden.HardenError, match=r"Branchy.*self\.training") as info:
        harden.apply(Branchy(), "activation:name=silu", input_size=32)
    assert not isinstance(info.value, harden.UsageError)


def test_bad_names_and_params():
    with pytest.raises(harden.UsageError, match="did you mean: silu"):
        harden.apply(Branchy(), "activation:name=slu", input_size=32)
    with pytest.raises(harden.UsageError, match="softplus only"):
        harden.transforms.parse_transform("activation:name=silu,beta=2")
    with pytest.raises(harden.UsageError, match="both 'relu'"):
        harden.transforms.parse_transform("activation:name=relu")
    with pytest.raises(harden.UsageError, match="source"):
        harden.transforms.parse_transform("activation:name=silu,source=sigmoid")
    assert harden.transforms.parse_transform("activation:name=Swish").config["name"] == "silu"


def test_nothing_to_replace_and_source_family():
    base = harden.load_model("timm:tinynet_e", num_classes=10, input_size=32)
    silus, sigmoids = count(base, (nn.SiLU,)), count(base, (nn.Sigmoid,))
    same = harden.apply(base, "activation:name=gelu")
    assert any("nothing changed" in c and "SiLU" in c for c in changes(same))
    assert torch.equal(logits(same), logits(base))
    out = harden.apply(base, "activation:name=gelu,source=silu")
    assert count(out, (nn.SiLU,)) == 0 and count(out, (nn.GELU,)) == silus
    assert count(out, (nn.Sigmoid,)) == sigmoids  # SE gates stay
    assert not torch.allclose(logits(out), logits(base))


def test_going_back_to_relu_restores_outputs():
    base, smooth = base_model("tv:resnet18"), silu_model("tv:resnet18")
    back = harden.apply(smooth, "activation:name=relu,source=silu")
    assert count(back, (nn.SiLU,)) == 0 and count(back, (nn.ReLU,)) == count(base, (nn.ReLU,))
    assert torch.equal(logits(back), logits(base))


def test_elu_alpha():
    net = Functional().eval()
    out = harden.apply(net, "activation:name=elu,alpha=0.5", input_size=32)
    assert out.net.act.alpha == 0.5 and isinstance(out.net.act_fn, nn.ELU) and out.net.act_fn.alpha == 0.5


def test_replay_checks_recorded_sites():
    from harden_plugins.activation import Activation

    model = harden.wrap(Functional(), input_size=32)
    with pytest.raises(harden.HardenError, match="replaying"):
        Activation(name="silu").replay(model, {"modules": ["elsewhere"], "functional": {}})


def test_cli_apply(tmp_path):
    from harden.cli import main

    out = tmp_path / "out.safetensors"
    runner = CliRunner()
    result = runner.invoke(main, ["apply", "tv:resnet18", "--input-size", "32", "--num-classes", "10",
                                  "--activation", "silu", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "-> SiLU" in result.output and out.exists()
    assert read_provenance(out).transforms[0].config["name"] == "silu"
    bad = runner.invoke(main, ["apply", "tv:mobilenet_v3_small", "--input-size", "32", "--num-classes", "10",
                               "--activation", "sigmoidish", "-o", str(tmp_path / "bad.safetensors")])
    assert bad.exit_code == 2
    assert "must be one of" in bad.output
