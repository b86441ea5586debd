"""Training methods as registered objects (harden.methods), N-FGSM, and the catastrophic-overfitting guard."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

import harden
from harden.cli import main
from harden.errors import UsageError
from harden.methods import METHODS, TrainingMethod, get_method, method_names, register_method
from harden.methods.n_fgsm import n_fgsm_examples
from harden.schemas.finetune import make_config
from harden.training.collapse import collapse_of, first_collapse
from harden.training.trainer import Trainer


def _net(classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes))


def _data(n: int = 96, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, 8, 8, generator=g), torch.randint(0, classes, (n,), generator=g)


# --------------------------------------------------------------------------------------------- N-FGSM


def test_n_fgsm_takes_its_noise_and_one_unprojected_step_as_the_paper_does() -> None:
    net = _net().eval()
    x, y = _data(32)
    x = x * 0.5 + 0.25  # away from the image bounds, so the range clip does not hide the statistics
    eps = 8 / 255
    adv = n_fgsm_examples(net, x, y, eps=eps, step=eps, noise=2.0, generator=torch.Generator().manual_seed(3))
    # by hand: the same noise draw, the gradient at the noisy start, one sign step of eps, clip to [0, 1]
    g = torch.Generator().manual_seed(3)
    eta = (torch.rand(x.shape, generator=g) * 2 - 1) * 2 * eps
    start = (x + eta).clamp(0, 1).requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(net(start), y), start)
    expected = (start.detach() + eps * grad.sign()).clamp(0, 1)
    assert torch.equal(adv, expected)
    delta = adv - x
    assert delta.abs().max() > eps * 1.5  # no projection back to the eps ball (up to 3 eps)
    assert delta.abs().max() <= 3 * eps + 1e-6
    noise = eta.flatten()
    assert abs(noise.mean().item()) < 0.1 * eps and noise.abs().max() <= 2 * eps  # uniform on [-2 eps, 2 eps]
    assert (delta - eta).abs().sub(eps).abs().max() < 1e-6  # the step is exactly eps on every pixel


def test_n_fgsm_is_a_method_everywhere_with_its_defaults_recorded() -> None:
    assert "n-fgsm" in method_names() and get_method("n-fgsm").fixed_steps == 1
    cfg = make_config(method="n-fgsm", eps="8/255")
    assert cfg.resolved_step_size() == pytest.approx(8 / 255) and cfg.method_options() == {"nfgsm_noise": None}
    with pytest.raises(UsageError, match="did you mean: n-fgsm"):
        make_config(method="nfgsm")
    with pytest.raises(UsageError, match="--nfgsm-noise must be a non-negative multiple of eps"):
        make_config(method="n-fgsm", nfgsm_noise=-1)
    with pytest.raises(UsageError, match="--on-collapse must be one of stop, warn, ignore"):
        make_config(on_collapse="halt")
    x, y = _data()
    model = harden.wrap(_net(), input_size=8)
    out = harden.finetune(model, (x, y), method="n-fgsm", nfgsm_noise=1.5, eps=0.03, epochs=1, val_n=16,
                          batch_size=16, progress=False, curves=False)
    entry = out.provenance.finetune
    assert entry.method == "n-fgsm" and entry.steps == 1 and entry.nfgsm_noise == 1.5
    assert entry.step_size == pytest.approx(0.03)


def test_the_command_line_offers_every_registered_method() -> None:
    res = CliRunner().invoke(main, ["finetune", "--help"])
    assert res.exit_code == 0 and "n-fgsm" in res.output and "--on-collapse" in res.output


# ---------------------------------------------------------------------------- a method in one new file


class SignOnly(TrainingMethod):
    """FGSM from zero, one step of eps: a whole training method in a few lines."""

    name, label = "test-fgsm-zero", "FGSM without a random start (test)"
    fixed_steps = 1

    def step_size(self, eps: float, steps: int) -> float:
        return eps

    def perturb(self, model, x, y, *, eps, step, steps, norm, generator, options):
        from harden.attacks import pgd_core

        return pgd_core(model, x, y, eps=eps, steps=1, step=step, norm=norm, start="zero")


def test_adding_a_training_method_is_one_registered_class() -> None:
    with METHODS.scoped():  # registered for this test only
        register_method(SignOnly())
        x, y = _data()
        model = harden.wrap(_net(), input_size=8)
        out = harden.finetune(model, (x, y), method="test-fgsm-zero", eps=0.03, epochs=1, val_n=16, batch_size=16,
                              progress=False, curves=False)
        assert out.provenance.finetune.method == "test-fgsm-zero" and out.provenance.finetune.steps == 1
        with pytest.raises(ValueError, match="already registered"):
            register_method(SignOnly())
    assert "test-fgsm-zero" not in METHODS


# ------------------------------------------------------------------------------------ the guard's rule


def _curve(robust: list[float], train: list[float]) -> list[dict]:
    return [{"epoch": i + 1, "val_robust": r, "train_acc": t} for i, (r, t) in enumerate(zip(robust, train))]


def test_the_guard_fires_on_a_collapse_and_not_on_healthy_or_noisy_curves() -> None:
    collapse = _curve([20, 30, 34, 9], [25, 35, 40, 70])
    found = collapse_of(collapse[:3], collapse[3])
    assert found == {"epoch": 4, "val_robust": 9, "train_acc": 70, "best_epoch": 3, "best_val_robust": 34,
                     "best_train_acc": 40}
    healthy = _curve([20, 30, 34, 33.5], [25, 35, 40, 41])
    assert collapse_of(healthy[:3], healthy[3]) is None
    falls_without_rising = _curve([20, 30, 34, 9], [25, 35, 40, 38])  # the training attack fell too: no collapse
    assert collapse_of(falls_without_rising[:3], falls_without_rising[3]) is None
    near_zero = _curve([4, 8, 3], [15, 20, 30])  # a best under 10% is noise near zero
    assert collapse_of(near_zero[:2], near_zero[2]) is None
    assert collapse_of([], collapse[0]) is None and first_collapse(collapse) is None
    noisy = _curve([20, 30, 12], [25, 35, 40])  # 30 -> 12 on 64 images is within 4 standard errors (23 points)
    assert collapse_of(noisy[:2], noisy[2], n=64) is None
    assert collapse_of(noisy[:2], noisy[2], n=1000)["best_val_robust"] == 30  # on 1,000 images it is a collapse


def _scripted_validation(monkeypatch, robust: list[float]) -> None:
    """Validation that reports ``robust`` by epoch and trains nothing different (clean: 60%)."""
    def validate(self, x_val, y_val):
        return 60.0, robust[min(self.epoch, len(robust) - 1)]

    monkeypatch.setattr(Trainer, "validate", validate)
    monkeypatch.setattr("harden.training.epochs.collapse_of", _rises_always(collapse_of))


def _rises_always(rule):
    """The rule with the training attack's accuracy taken as rising (the scripted run keeps it honest)."""
    def wrapped(history, entry, n=None):  # the scripted curve is judged without the small set's error margin
        return rule([{**h, "train_acc": 0.0} for h in history], {**entry, "train_acc": 100.0})
    return wrapped


def test_the_guard_stops_keeps_the_best_epoch_and_records_it(monkeypatch, tmp_path) -> None:
    _scripted_validation(monkeypatch, [30.0, 40.0, 12.0, 50.0, 50.0])
    x, y = _data()
    model = harden.wrap(_net(), input_size=8)
    opts = dict(method="fgsm-rs", eps=0.03, epochs=5, val_n=16, batch_size=16, progress=False, curves=False)
    with pytest.warns(harden.errors.HardenWarning, match="catastrophic overfitting in epoch 3"):
        out = harden.finetune(model, (x, y), output=tmp_path / "o.safetensors", **opts)
    entry = harden.load(tmp_path / "o.safetensors", base=_net()).provenance.finetune
    assert entry.epochs_run == 3 and entry.kept_epoch == 2 and entry.stopped_early
    assert entry.collapse.epoch == 3 and entry.collapse.best_epoch == 2 and entry.collapse.action == "stop"
    assert entry.history[2]["collapse"]["val_robust"] == 12.0
    assert out.provenance.finetune.collapse == entry.collapse
    with pytest.warns(harden.errors.HardenWarning, match="training on"):
        warned = harden.finetune(model, (x, y), on_collapse="warn", **opts)
    assert warned.provenance.finetune.epochs_run == 5 and warned.provenance.finetune.collapse.action == "warn"
    ignored = harden.finetune(model, (x, y), on_collapse="ignore", **opts)
    assert ignored.provenance.finetune.collapse is None and ignored.provenance.finetune.epochs_run == 5


def test_resume_across_a_guard_stop_is_exact(monkeypatch, tmp_path) -> None:
    _scripted_validation(monkeypatch, [30.0, 40.0, 12.0, 50.0, 50.0])
    x, y = _data()
    opts = dict(method="fgsm-rs", eps=0.03, epochs=5, val_n=16, batch_size=16, progress=False, curves=False)
    with pytest.warns(harden.errors.HardenWarning):
        full = harden.finetune(harden.wrap(_net(), input_size=8), (x, y), output=tmp_path / "full.safetensors",
                               **opts)

    class Stop(Exception):
        pass

    def interrupt(info: dict) -> None:
        if info["epoch"] == 2:
            raise Stop

    part = tmp_path / "part.safetensors"
    with pytest.raises(Stop):
        harden.finetune(harden.wrap(_net(), input_size=8), (x, y), output=part, callback=interrupt, **opts)
    with pytest.warns(harden.errors.HardenWarning):
        resumed = harden.finetune(harden.wrap(_net(), input_size=8), (x, y), output=part, resume=True, **opts)
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    assert resumed.provenance.finetune.collapse == full.provenance.finetune.collapse


    def at_the_stop(info: dict) -> None:  # killed after the collapsed epoch's checkpoint, before the result
        if info["epoch"] == 3:
            raise Stop

    late = tmp_path / "late.safetensors"
    with pytest.raises(Stop), pytest.warns(harden.errors.HardenWarning):
        harden.finetune(harden.wrap(_net(), input_size=8), (x, y), output=late, callback=at_the_stop, **opts)
    again = harden.finetune(harden.wrap(_net(), input_size=8), (x, y), output=late, resume=True, **opts)
    assert again.provenance.finetune.epochs_run == 3  # the guard's stop holds on --resume: no epoch 4
    for k, v in full.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k


# ---------------------------------------------------------------------------- a real collapse, small


def _grayscale_wrn() -> harden.HardenedModel:
    torch.manual_seed(0)
    return harden.load_model("cifar:wrn-10-1", num_classes=10, input_size="1x28x28", model_kwargs={"base_width": 8},
                             mean=[0.286], std=[0.353])


@pytest.mark.slow
def test_the_guard_stops_a_real_catastrophic_overfitting_and_keeps_the_best_epoch() -> None:
    # FGSM from the clean image (no random start) at eps 0.3 with a constant learning rate 0.2: on the bundled
    # Fashion-MNIST sample its PGD accuracy falls to a few percent within the first epochs while the training
    # attack's accuracy rises, and does so again and again (here: 18.3% -> 4.3% in epoch 3, and in epochs 4, 5
    # and 12), so the guard's premise holds by a margin
    with METHODS.scoped():
        register_method(SignOnly())
        out = harden.finetune(_grayscale_wrn(), "sample:fashion-mnist", method="test-fgsm-zero", eps=0.3, epochs=12,
                              lr=0.2, schedule="constant", batch_size=64, val_n=300, val_steps=5, seed=0,
                              progress=False, curves=False)
    entry = out.provenance.finetune
    assert entry.collapse is not None and entry.collapse.action == "stop"
    assert entry.epochs_run == entry.collapse.epoch < 12  # stopped at the collapse
    assert entry.kept_epoch == entry.collapse.best_epoch  # and kept the best epoch before it
    assert entry.collapse.val_robust <= entry.collapse.best_val_robust / 2


@pytest.mark.slow
def test_the_guard_stays_quiet_on_a_healthy_run() -> None:
    out = harden.finetune(_grayscale_wrn(), "sample:fashion-mnist", method="pgd", steps=3, eps=0.05, epochs=5,
                          lr=0.05, schedule="cosine", batch_size=64, val_n=300, val_steps=5, seed=0, progress=False,
                          curves=False)
    entry = out.provenance.finetune
    assert entry.collapse is None and entry.epochs_run == 5
