"""Lipschitz upper bounds read off the traced graph, and the spectral penalty for training."""

from __future__ import annotations

import math
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

import harden
from harden.cli import main
from harden.lipschitz import SpectralPenalty, conv_spectral_norm, lipschitz_bound, spectral_penalty

CIFAR_TEST = Path("/work/shared/data/cifar10-jpeg/test.tar.gz")


def _explicit_norm(op, in_shape) -> float:
    """Largest singular value of the matrix of a linear map, built by applying it to the identity basis."""
    n = math.prod(in_shape)
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *in_shape)
    with torch.no_grad():
        cols = op(basis).reshape(n, -1)
    return float(torch.linalg.svdvals(cols)[0])


def test_single_linear_layer_is_exact():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(48, 7))
    report = lipschitz_bound(net, (3, 4, 4))
    exact = float(torch.linalg.svdvals(net[1].weight.detach().double())[0])
    assert abs(report.bound - exact) / exact < 1e-3


@pytest.mark.parametrize("kwargs", [
    {"padding": 1}, {"stride": 2, "padding": 1}, {"stride": 2, "padding": 0},
    {"groups": 3, "dilation": 2, "padding": 2},
])
def test_single_conv_is_exact_operator_norm(kwargs):
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 6, 3, **kwargs)
    w = conv.weight.detach().double()
    exact = _explicit_norm(lambda x: nn.functional.conv2d(x, w, None, conv.stride, conv.padding, conv.dilation,
                                                          conv.groups), (3, 6, 6))
    report = lipschitz_bound(nn.Sequential(conv), (3, 6, 6))
    assert abs(report.bound - exact) / exact < 1e-3
    assert abs(conv_spectral_norm(conv, (3, 6, 6)) - exact) / exact < 1e-3
    # the operator norm is not the reshaped weight matrix's norm
    reshaped = float(torch.linalg.svdvals(w.reshape(6, -1))[0])
    assert report.rows[0].type == "Conv2d" and report.rows[0].input_size == (3, 6, 6)
    assert abs(reshaped - exact) / exact > 1e-3 or kwargs.get("stride") == 2


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.AvgPool2d(3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x + torch.relu(self.bn(self.conv(x)))
        z = torch.cat([y, 0.5 * y], 1)
        return self.pool(z)


def test_graph_algebra_products_sums_and_concatenation():
    torch.manual_seed(2)
    net = _Residual().eval()
    net.bn.running_var.uniform_(0.1, 0.5)
    net.bn.weight.data.uniform_(0.5, 2.0)
    report = lipschitz_bound(net, (4, 5, 5))
    conv = conv_spectral_norm(net.conv, (4, 5, 5))
    bn = float((net.bn.weight.detach() / torch.sqrt(net.bn.running_var + net.bn.eps)).abs().max())
    pool = _explicit_norm(lambda x: nn.functional.avg_pool2d(x, 3, 1, 1), (8, 5, 5))
    expected = (1 + conv * bn) * math.sqrt(1 + 0.25) * pool
    assert report.bound == pytest.approx(expected, rel=1e-4)
    assert pool < 1  # overlapping average pooling is bounded by its own operator norm, not by 1
    rows = {r.layer: r for r in report.rows}
    assert rows["bn"].norm == pytest.approx(bn) and rows["pool"].norm == pytest.approx(pool, rel=1e-4)


def test_pooling_and_activation_constants():
    net = nn.Sequential(nn.MaxPool2d(3, stride=2, padding=1), nn.SiLU(), nn.MaxPool2d(2), nn.GELU(), nn.Flatten())
    report = lipschitz_bound(net, (2, 8, 8))
    # an input pixel can be the max of up to 2x2 overlapping windows: factor sqrt(4)
    assert report.bound == pytest.approx(2 * 1.09984 * 1 * 1.12891, rel=1e-5)


def test_products_of_input_dependent_tensors_are_reported_not_bounded():
    model = harden.load_model("cifar:robustresnet-custom", model_kwargs={"depths": [1, 1, 1], "widths": [1, 1, 1]})
    report = lipschitz_bound(model, n_iter=10)
    assert math.isinf(report.bound)
    assert any(".se:" in u for u in report.unsupported)


def _cifar_images(tmp_path: Path, n: int = 4) -> torch.Tensor:
    if not CIFAR_TEST.exists():
        return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    images = []
    with tarfile.open(CIFAR_TEST) as tar:
        for member in tar:
            if member.name.endswith(".jpg"):
                tar.extract(member, tmp_path)
                arr = np.asarray(Image.open(tmp_path / member.name).convert("RGB"), dtype=np.float32) / 255.0
                images.append(torch.from_numpy(arr).permute(2, 0, 1))
                if len(images) == n:
                    break
    return torch.stack(images)


@pytest.mark.slow
def test_bound_is_never_below_measured_gradients_on_real_images(tmp_path):
    torch.manual_seed(3)
    model = harden.load_model("cifar:wrn-10-1")
    gen = torch.Generator().manual_seed(3)
    for m in model.modules():  # trained-looking batch-norm statistics: gains far from 1
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) * 0.2 + 0.02)
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    model.eval()
    report = lipschitz_bound(model)
    assert math.isfinite(report.bound)
    assert report.rows[0].layer == "normalize" and report.rows[0].norm == pytest.approx(1 / 0.2435, rel=1e-4)
    largest_jacobian, largest_difference = 0.0, 0.0
    for x in _cifar_images(tmp_path):
        jac = torch.autograd.functional.jacobian(lambda z: model(z[None])[0], x).reshape(10, -1)
        largest_jacobian = max(largest_jacobian, float(torch.linalg.matrix_norm(jac, 2)))
        diffs = (jac[:, None, :] - jac[None, :, :]).norm(dim=-1)
        largest_difference = max(largest_difference, float(diffs.max()))
    assert largest_jacobian > 0
    assert report.bound >= largest_jacobian
    assert report.bound >= largest_difference / math.sqrt(2)  # the gradient of f_i - f_j is J^T (e_i - e_j)
    assert report.margin_bound >= largest_difference


def test_spectral_penalty_is_differentiable_and_tracks_the_norms():
    torch.manual_seed(4)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                        nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    penalty = SpectralPenalty(net, (3, 8, 8))
    value = penalty()
    assert value.requires_grad and value.dim() == 0
    value.backward()
    for layer in (net[0], net[2], net[4]):
        assert layer.weight.grad is not None and float(layer.weight.grad.abs().sum()) > 0
    assert set(penalty.vectors) == {"0", "2", "4"}
    for _ in range(60):  # one power iteration per call on persistent vectors converges
        value = penalty()
    expected = (math.log(conv_spectral_norm(net[0], (3, 8, 8))) + math.log(conv_spectral_norm(net[2], (8, 8, 8)))
                + math.log(float(torch.linalg.svdvals(net[4].weight.detach())[0])))
    assert float(value.detach()) == pytest.approx(expected, abs=1e-2)
    # gradient descent on the penalty shrinks the norms
    before = float(value.detach())
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    for _ in range(5):
        opt.zero_grad()
        penalty().backward()
        opt.step()
    assert float(penalty().detach()) < before


def test_spectral_penalty_on_a_hardened_model_uses_its_input_size():
    model = harden.apply(harden.load_model("cifar:wrn-16-1"), ["upsample:factor=2"])
    value = spectral_penalty(model)
    assert value.requires_grad
    value.backward()
    assert model.net.block3.layer[0].conv1.weight.grad is not None
    sizes = {name: op.in_shape for name, _, op in SpectralPenalty(model).layers if op is not None}
    assert sizes["net.conv1"] == (1, 3, 64, 64) and sizes["net.block3.layer.0.conv2"] == (1, 64, 16, 16)
    with pytest.raises(harden.UsageError, match="input_size"):
        spectral_penalty(nn.Sequential(nn.Conv2d(3, 3, 3)))


@pytest.mark.slow
def test_inspect_lipschitz_prints_bound_and_table(tmp_path):
    path = harden.save(harden.load_model("cifar:wrn-10-1"), tmp_path / "w.safetensors")
    result = CliRunner().invoke(main, ["inspect", str(path), "--lipschitz"])
    assert result.exit_code == 0, result.output
    assert "Lipschitz upper bound" in result.output
    assert "net.block1.layer.0.conv1" in result.output and "Conv2d" in result.output
