"""L1 and L2 AutoAttack give exactly what a direct pyautoattack call gives; the rand version for randomized
models runs, is recorded, and is what harden suggests when two clean passes disagree."""

from __future__ import annotations

import re

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import harden
from harden.cli import main
from harden.data import load_dataset, load_tensors, select
from harden.errors import UsageError
from tests.helpers import one_thread, train_on_sample

N, BATCH = 64, 16


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


@pytest.fixture(scope="module")
def tiny() -> nn.Module:
    """A tiny CNN trained briefly on the bundled sample (18 of the 64 test images right, here)."""
    with one_thread():
        torch.manual_seed(0)
        model = harden.wrap(_net(), input_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)
        return train_on_sample(model, epochs=5, lr=1e-2)


def _direct(model: nn.Module, norm: str, eps: float) -> list[bool]:
    """pyautoattack itself on the same images: its standard parameters for ``norm``, APGD-CE then APGD-T."""
    from pyautoattack import AutoAttack

    ds = load_dataset("sample", "test", image_size=32)
    x, y = load_tensors(ds, select(ds, N, random_subset=True, seed=0))
    aa = AutoAttack(model, norm=norm, eps=eps, version="standard", device="cpu", seed=0)
    aa.attacks_to_run = ["apgd-ce", "apgd-t"]
    with torch.no_grad():
        _, y_adv = aa.run_standard_evaluation(x, y, batch_size=BATCH)
    return (y_adv == y).tolist()


# eps where APGD-CE breaks some of the right images, APGD-T a few more and some survive both: 18 -> 13 -> 10
# at L2 0.2 and 18 -> 14 -> 10 at L1 2 (a margin of several images either way)
@pytest.mark.parametrize(("norm", "eps"), [("L2", 0.2), ("L1", 2.0)])
def test_l2_and_l1_match_a_direct_pyautoattack_call(tiny: nn.Module, norm: str, eps: float) -> None:
    with one_thread():
        report = harden.evaluate(tiny, "sample", attack="autoattack", fast=True, norm=norm, eps=eps, n=N,
                                 random_subset=True, seed=0, batch_size=BATCH, device="cpu", check_examples=8)
        flags = _direct(tiny, norm, eps)
    assert [o == "robust" for o in report.examples.outcome] == flags
    accs = {row.attack: row.correct for row in report.per_attack}
    assert accs["clean"] > accs["apgd-ce"] > accs["apgd-t"] == sum(flags) > 0  # not vacuous
    assert report.norm == norm and report.eps == eps and report.version == "fast"
    assert not [w for w in report.warnings if w.name in ("perturbation", "outside-eps-ball")]


class _Noisy(nn.Module):
    """Gaussian input noise left on at evaluation: a randomized defense."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.05 * torch.randn_like(x)


def test_the_rand_version_runs_is_recorded_and_is_suggested_for_a_randomized_model(tiny: nn.Module) -> None:
    noisy = nn.Sequential(_Noisy(), tiny)
    with one_thread():
        standard = harden.evaluate(noisy, "sample", attack="autoattack", fast=True, eps=2 / 255, n=8,
                                   random_subset=True, seed=0, batch_size=8, device="cpu", check_examples=0)
        rand = harden.evaluate(noisy, "sample", attack="autoattack", version="rand", eps=2 / 255, n=8,
                               random_subset=True, seed=0, batch_size=8, device="cpu", check_examples=0)
    [hint] = [w for w in standard.warnings if w.name == "randomized-defense"]
    assert "--version rand" in hint.message
    assert rand.version == "rand" and rand.attacks == ["apgd-ce", "apgd-dlr"]
    assert "autoattack_acc" not in rand  # only the standard version is RobustBench's AutoAttack figure
    assert not [w for w in rand.warnings if w.name == "randomized-defense"]  # not asked of the rand version
    assert 0 <= rand.robust_acc <= rand.clean_acc


@pytest.mark.parametrize(("options", "message"), [
    ({"attack": "pgd", "norm": "L1"}, "--attack pgd takes --norm Linf or L2; L1 is attacked by autoattack or apgd-ce"),
    ({"attack": "autoattack", "version": "rand", "fast": True}, "--fast and --version rand"),
    ({"attack": "apgd-ce", "version": "rand"}, "--version rand applies to --attack autoattack"),
    ({"attack": "autoattack", "norm": "L3"}, "unknown norm 'L3' (use Linf, L2, L1)"),
])
def test_impossible_requests_are_one_line_before_anything_loads(options: dict, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        harden.evaluate("no-such-model.safetensors", "sample", **options)


def test_the_command_line_takes_l1_and_rand() -> None:
    res = CliRunner().invoke(main, ["evaluate", "x.safetensors", "--data", "sample", "--norm", "L1",
                                    "--attack", "cw"])
    assert res.exit_code == 2 and "--attack cw takes --norm Linf or L2" in res.output
    assert "rand" in CliRunner().invoke(main, ["evaluate", "--help"]).output
