"""Models with few classes (2, 3, 5) in every attack and training loss, one-output models refused, and the
normalization check of ``harden evaluate``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import harden
from harden import evaluation
from harden.attacks import ONE_LOGIT, cw, fgsm, pgd
from harden.cli import main
from harden.errors import UsageError
from harden.evaluation import honesty_checks as chk
from harden.methods import get_method
from harden.model import IMAGENET_MEAN, IMAGENET_STD
from tests.helpers import importable_module, one_thread

MODULE = "harden_fewclass_nets"
SOURCE = '''
from torch import nn


def Centroids(num_classes: int = 10, channels: int = 3) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * 64, num_classes))
'''
N, EPS = 24, 16 / 255
CLASSES = (2, 3, 5)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def nets_dir(tmp_path_factory: pytest.TempPathFactory):
    with importable_module(tmp_path_factory.mktemp("fewclass"), MODULE, SOURCE) as d:
        yield d


def _templates(classes: int, channels: int = 3) -> torch.Tensor:
    return torch.rand(classes, channels, 8, 8, generator=torch.Generator().manual_seed(classes))


def _centroids(classes: int, templates: torch.Tensor, where: Path, *, mean=(0.0, 0.0, 0.0),
               std=(1.0, 1.0, 1.0)) -> nn.Module:
    """A harden model that classifies an image by its nearest template: linear logits x.T_k - |T_k|^2 / 2."""
    from safetensors.torch import save_file

    flat = templates.flatten(1)
    weights = where / f"centroids-{classes}-{templates.shape[1]}.safetensors"
    save_file({"1.weight": flat.contiguous(), "1.bias": -0.5 * (flat ** 2).sum(1)}, str(weights))
    model = harden.load_model(f"{MODULE}:Centroids", num_classes=classes, input_size=tuple(templates.shape[1:]),
                              weights=weights, mean=mean, std=std, model_kwargs={"channels": templates.shape[1]})
    return model.eval()


def _images(templates: torch.Tensor, n: int = N) -> tuple[torch.Tensor, torch.Tensor]:
    """Images between a template and another one (at most half-way): all classified correctly, the ones
    nearest half-way broken by a small eps, most not."""
    classes = len(templates)
    y = torch.arange(n) % classes
    other = (y + 1 + torch.arange(n) % max(1, classes - 1)) % classes
    a = torch.linspace(0.0, 0.48, n)[torch.randperm(n, generator=torch.Generator().manual_seed(1))].view(-1, 1, 1, 1)
    return (1 - a) * templates[y] + a * templates[other], y


@pytest.fixture(scope="module")
def models(nets_dir) -> dict[int, tuple[nn.Module, Path, tuple[torch.Tensor, torch.Tensor]]]:
    """For each class count: the model, its file, and its evaluation images."""
    out = {}
    for c in CLASSES:
        t = _templates(c)
        model = _centroids(c, t, nets_dir)
        path = nets_dir / f"centroids{c}.safetensors"
        harden.save(model, path)
        out[c] = (model, path, _images(t))
    return out


def _image_folder(root: Path, x: torch.Tensor, y: torch.Tensor) -> Path:
    """``x`` as PNG files in an ImageFolder tree (classes c0, c1, ... in label order)."""
    from PIL import Image

    for i, (img, label) in enumerate(zip(x, y.tolist())):
        d = root / f"c{label}"
        d.mkdir(parents=True, exist_ok=True)
        pixels = (img.permute(1, 2, 0) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(d / f"{i:03d}.png")
    return root


def _check_report(report: dict, classes: int, fast: bool) -> None:
    """Robust accuracy measured and below clean, APGD-T reached, and every deviation recorded."""
    targeted = "apgd-t" if classes >= 4 else "apgd-t-cw"
    stages = ["apgd-ce", targeted] + ([] if fast else ["fab-t", "square"])
    assert report["attacks"] == stages and [r["attack"] for r in report["per_attack"]] == ["clean", *stages]
    assert report["clean_acc"] == 100.0
    assert 0 < report["robust_acc"] < report["clean_acc"]
    rows = {r["attack"]: r for r in report["per_attack"]}
    assert rows["apgd-ce"]["correct"] < N and rows[targeted]["attacked"] > 0  # APGD-T ran on survivors
    assert report["classes"] == classes and report["target_classes"] == classes - 1
    devs = report["deviations"]
    assert any(f"target the {classes - 1} other class" in d for d in devs)
    assert any("targeted CW margin" in d for d in devs) == (classes < 4)
    assert [w["name"] for w in report["warnings"]].count("autoattack-deviation") == 1
    assert not any(w["name"] in ("too-few-classes", "normalization-mismatch") for w in report["warnings"])
    standard_counts = not fast and classes >= 4  # the targets cut to C - 1 is AutoAttack's own advice
    assert (report.get("autoattack_acc") == report["robust_acc"]) == standard_counts
    assert (report["robustbench"]["autoattack_acc"] is not None) == standard_counts


# ---------------------------------------------------------------------------------------- AutoAttack


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "standard"])
@pytest.mark.parametrize("classes", CLASSES)
def test_autoattack_library(models, classes, fast):
    model, _, data = models[classes]
    report = evaluation.evaluate(model, data, eps=EPS, fast=fast, n=N, batch_size=12, device="cpu")
    _check_report(report, classes, fast)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "standard"])
@pytest.mark.parametrize("classes", CLASSES)
def test_autoattack_cli(models, classes, fast, tmp_path):
    _, path, (x, y) = models[classes]
    root = _image_folder(tmp_path / "data", x, y)
    out = tmp_path / "r.json"
    args = ["evaluate", str(path), "--trust-code", "--data", f"imagefolder:{root}", "-n", str(N), "--eps", "16/255",
            "--batch-size", "12", "--device", "cpu", "--report", str(out), "-q", *(["--fast"] if fast else [])]
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    lines = [line for line in res.output.splitlines() if line.startswith("warning [autoattack-deviation]")]
    assert len(lines) == 1 and f"{classes} classes" in lines[0]
    report = json.loads(out.read_text())
    _check_report(report, classes, fast)
    assert "robust accuracy:" in res.output


def test_apgd_t_cw_is_the_official_apgd_t_with_the_margin_loss(models):
    """With 3 classes the stage keeps pyautoattack's APGD-T (its targets and schedule), with the targeted margin."""
    from harden.evaluation.attack_plan import plan_attack, plan_for_classes
    from harden.evaluation.autoattack import autoattack_for

    model, _, (x, y) = models[3]
    plan = plan_for_classes(plan_attack("autoattack", eps=EPS), 3)
    aa = autoattack_for(model, plan, torch.device("cpu"))
    assert aa.apgd_targeted.n_target_classes == 2 and aa.fab.n_target_classes == 2
    logits = model(x[:4])
    aa.apgd_targeted.y_target = torch.tensor([1, 2, 0, 1])
    margin = aa.apgd_targeted.dlr_loss_targeted(logits, y[:4])
    expected = logits[torch.arange(4), aa.apgd_targeted.y_target] - logits[torch.arange(4), y[:4]]
    assert torch.allclose(margin, expected)
    ten = plan_for_classes(plan_attack("autoattack", eps=EPS), 10)
    assert ten.stages == ("apgd-ce", "apgd-t", "fab-t", "square") and ten.targets == 9 and not ten.deviations
    assert ten.is_full_autoattack


def test_apgd_ce_alone_needs_no_deviation(models):
    model, _, data = models[2]
    report = evaluation.evaluate(model, data, attack="apgd-ce", eps=EPS, n=N, batch_size=12, device="cpu")
    assert report["attacks"] == ["apgd-ce"] and "deviations" not in report and report["classes"] == 2
    assert 0 < report["robust_acc"] < report["clean_acc"]


# ------------------------------------------------------------------------------ quick attacks, training


@pytest.mark.parametrize("attack", ["pgd", "fgsm", "cw"])
@pytest.mark.parametrize("classes", CLASSES)
def test_quick_attacks(models, classes, attack):
    model, _, data = models[classes]
    report = evaluation.evaluate(model, data, attack=attack, eps=EPS, n=N, batch_size=12, device="cpu")
    assert report["clean_acc"] == 100.0 and 0 < report["robust_acc"] < report["clean_acc"]
    assert "deviations" not in report


@pytest.mark.parametrize("classes", CLASSES)
def test_attack_functions_break_the_images_near_half_way(models, classes):
    model, _, (x, y) = models[classes]
    for adv in (pgd(model, x, y, eps=EPS, steps=10), cw(model, x, y, eps=EPS, steps=10),
                fgsm(model, x, y, eps=EPS)):
        assert (adv - x).abs().max() <= EPS + 1e-6
        assert 0 < int((model(adv).argmax(1) != y).sum()) < N


@pytest.mark.parametrize("method", ["pgd", "fgsm-rs", "trades", "mart"])
@pytest.mark.parametrize("classes", CLASSES)
def test_training_attacks_and_losses(models, classes, method):
    model, _, (x, y) = models[classes]
    gen = torch.Generator().manual_seed(0)
    adv = get_method(method).perturb(model, x, y, eps=EPS, step=EPS / 4, steps=get_method(method).steps(5), norm="Linf",
                                     generator=gen, options={})
    assert (adv - x).abs().max() <= EPS + 1e-6
    with torch.no_grad():
        nat, out = model(x), model(adv)
    loss = get_method(method).loss(out, y, logits_nat=nat, beta=6.0, label_smoothing=0.0)
    clean_loss = get_method(method).loss(nat, y, logits_nat=nat, beta=6.0, label_smoothing=0.0)
    assert torch.isfinite(loss) and loss > clean_loss  # the attack raised the training loss


# -------------------------------------------------------------------------------------- one output


class _Sigmoid(nn.Module):
    def __init__(self, squeeze: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(192, 1)
        self.squeeze = squeeze

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x.flatten(1))
        return z.squeeze(1) if self.squeeze else z


@pytest.mark.parametrize("squeeze", [False, True])
def test_one_output_is_refused_with_how_to_wrap_it(squeeze):
    x, y = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 0, 1])
    with pytest.raises(UsageError, match=r"torch\.cat\(\[-z / 2, z / 2\], dim=1\)"):
        evaluation.evaluate(_Sigmoid(squeeze), (x, y), fast=True, n=4, device="cpu")
    with pytest.raises(UsageError, match="one logit per class"):
        get_method("pgd").loss(torch.zeros(4, 1), y, logits_nat=None, beta=6.0, label_smoothing=0.0)
    with pytest.raises(UsageError, match="one logit per class"):
        pgd(_Sigmoid(squeeze), x, y, eps=EPS, steps=1)


def test_one_output_model_file_exits_2_in_one_line(nets_dir, models, tmp_path):
    path = tmp_path / "one.safetensors"
    harden.save(_centroids(1, _templates(1), nets_dir), path)
    _, _, (x, y) = models[2]
    root = _image_folder(tmp_path / "data", x, y)
    res = CliRunner().invoke(main, ["evaluate", str(path), "--trust-code", "--data", f"imagefolder:{root}",
                                    "-n", "4", "--device", "cpu", "-q"])
    assert res.exit_code == 2
    errors = [line for line in res.output.splitlines() if "one logit per class" in line]
    assert len(errors) == 1 and ONE_LOGIT in errors[0] and "Traceback" not in res.output


# ----------------------------------------------------------------------------------- normalization


LEVELS = (0.1, 0.3, 0.5, 0.7, 0.9)


def _brightness(where: Path, channels: int, **norm) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A model trained without normalization: it tells five brightness levels apart (64 noisy images)."""
    templates = torch.tensor(LEVELS).view(-1, 1, 1, 1).expand(-1, channels, 8, 8).clone()
    model = _centroids(len(LEVELS), templates, where, **norm)
    y = torch.arange(64) % len(LEVELS)
    noise = 0.05 * torch.rand(64, channels, 8, 8, generator=torch.Generator().manual_seed(2)) - 0.025
    return model, templates[y] + noise, y


def test_wrong_normalization_is_named_with_the_fix(nets_dir):
    # stated ImageNet statistics, trained on raw pixels
    model, x, y = _brightness(nets_dir, 3, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    warns = chk.check_normalization(model, x, y, batch_size=16)
    assert [w.name for w in warns] == ["normalization-mismatch"]
    msg = warns[0].message
    assert "first 64 images 64 are classified correctly with no normalization" in msg and "ImageNet" in msg
    assert msg.endswith("--mean 0,0,0 --std 1,1,1")
    # the same model stating its true normalization: nothing to say
    right, _, _ = _brightness(nets_dir, 3)
    assert chk.check_normalization(right, x, y, batch_size=16) == []
    # on 6 images the same gap could be noise (exact test p >= 0.01): no warning
    assert chk.check_normalization(model, x[:6], y[:6], batch_size=16) == []
    # a model without a stated normalization is not checked
    plain = nn.Sequential(nn.Flatten(), nn.Linear(192, 5))
    assert chk.check_normalization(plain, x, y, batch_size=16) == []


def test_one_channel_models_compare_channel_averages(nets_dir):
    mean, std = sum(IMAGENET_MEAN) / 3, sum(IMAGENET_STD) / 3
    model, x, y = _brightness(nets_dir, 1, mean=(mean,), std=(std,))
    warns = chk.check_normalization(model, x, y, batch_size=64)
    assert len(warns) == 1 and "--mean 0 --std 1" in warns[0].message


def test_evaluate_reports_the_normalization_mismatch(nets_dir):
    model, x, y = _brightness(nets_dir, 3, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    report = evaluation.evaluate(model, (x, y), attack="fgsm", eps=1 / 255, n=64, batch_size=32, device="cpu",
                                 check_examples=0)
    assert [w["name"] for w in report["warnings"]].count("normalization-mismatch") == 1
    assert report["clean_acc"] < 100 - chk.NORMALIZATION_GAIN
