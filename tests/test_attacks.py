"""The quick attacks: eps-ball and [0, 1] constraints, loss increase, determinism, the attack list."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from harden.attacks import cw, fgsm, list_attacks, margin_loss, pgd, project
from harden.cli import main


@pytest.fixture(scope="module")
def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(32, 10)).eval()


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.rand(8, 3, 16, 16, generator=gen), torch.randint(0, 10, (8,), generator=gen)


@pytest.mark.parametrize("norm, eps", [("Linf", 4 / 255), ("L2", 0.25)])
def test_pgd_stays_in_the_ball_and_raises_the_loss(net, batch, norm, eps):
    x, y = batch
    adv = pgd(net, x, y, eps=eps, steps=10, norm=norm, generator=torch.Generator().manual_seed(0))
    d = (adv - x).flatten(1)
    size = d.abs().amax(1) if norm == "Linf" else d.norm(dim=1)
    assert float(size.max()) <= eps + 1e-6
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    loss = nn.functional.cross_entropy
    with torch.no_grad():
        assert loss(net(adv), y) > loss(net(x), y) + 1e-3


def test_pgd_is_deterministic_with_a_generator(net, batch):
    x, y = batch
    a = pgd(net, x, y, eps=0.03, steps=3, generator=torch.Generator().manual_seed(5))
    b = pgd(net, x, y, eps=0.03, steps=3, generator=torch.Generator().manual_seed(5))
    c = pgd(net, x, y, eps=0.03, steps=3, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_fgsm_is_one_full_step(net, batch):
    x, y = batch
    x = x.clamp(0.1, 0.9)  # no clipping at the image border
    adv = fgsm(net, x, y, eps=0.05)
    d = (adv - x).abs()
    assert float(d.max()) == pytest.approx(0.05, abs=1e-6)
    assert float((d > 0).float().mean()) > 0.9  # every pixel with a non-zero gradient moves by eps


def test_cw_raises_the_margin(net, batch):
    x, y = batch
    adv = cw(net, x, y, eps=8 / 255, steps=10, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert margin_loss(net(adv), y).mean() > margin_loss(net(x), y).mean()


def test_margin_loss_and_projection():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 5.0]])
    y = torch.tensor([0, 1])
    assert margin_loss(logits, y).tolist() == [-2.0, 3.0]
    delta = torch.tensor([[3.0, 4.0]])
    assert project(delta, 1.0, "Linf").tolist() == [[1.0, 1.0]]
    assert project(delta, 1.0, "L2")[0].tolist() == pytest.approx([0.6, 0.8])


def test_list_attacks_and_harden_list():
    attacks = list_attacks()
    assert set(attacks) == {"autoattack", "apgd-ce", "pgd", "fgsm", "cw"}
    assert all(isinstance(v, str) and v for v in attacks.values())
    out = CliRunner().invoke(main, ["list"]).output
    assert "attacks:" in out and "autoattack" in out and "apgd-ce" in out


def _sign_noise(model, x, y, *, eps, norm, steps, step_size, generator):
    """A plugin's attack: a random corner of the Linf ball (no gradient)."""
    signs = torch.randint(0, 2, x.shape, generator=generator).to(x) * 2 - 1
    return (x + eps * signs).clamp(0, 1)


@pytest.fixture
def scoped_attacks():
    from harden.attacks import ATTACKS

    with ATTACKS.scoped():
        yield


def test_a_registered_attack_runs_through_evaluate_the_cli_and_harden_list(scoped_attacks, tmp_path):
    from harden.attacks import Attack, attack_label, registry
    from harden.evaluation import evaluate

    registry.register_attack(Attack("sign-noise", "a random corner of the eps ball (test plugin)", run=_sign_noise))
    with pytest.raises(ValueError, match="already registered"):
        registry.register_attack(Attack("sign-noise", "again", run=_sign_noise))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 10)).eval()
    report = evaluate(model, "sample", attack="sign-noise", n=16, batch_size=8, device="cpu")
    assert report["attack"] == "sign-noise" and attack_label(report) == "SIGN-NOISE"
    assert 0 <= report["robust_acc"] <= report["clean_acc"]
    listed = CliRunner().invoke(main, ["list"]).output
    assert "sign-noise" in listed
    refused = CliRunner().invoke(main, ["evaluate", "x.safetensors", "--data", "sample", "--attack", "sign-nose"])
    assert refused.exit_code == 2 and "sign-noise" in refused.output  # the close match names the plugin's attack
    recipe = tmp_path / "r.yaml"
    recipe.write_text((Path(__file__).parents[1] / "recipes" / "quickstart.yaml").read_text()
                      .replace("attacks: [pgd]", "attacks: [pgd, sign-noise]"))
    checked = CliRunner().invoke(main, ["run", str(recipe), "--check"])
    assert checked.exit_code == 0, checked.output  # a recipe may name it too
