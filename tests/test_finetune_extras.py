"""MART, adversarial weight perturbation and extra data mixed into every batch (tiny CPU runs)."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

import harden
from harden import training
from harden.cli import main
from harden.data import CIFAR10_CLASSES
from harden.errors import UsageError
from harden.methods import get_method
from harden.recipes import parse_recipe
from harden.recipes.compare import finetune_text
from harden.runtime.session import DistSession
from harden.serialization import read_provenance
from harden.training import Trainer, checkpoint_path_for, finetune, make_config
from harden.training.awp import WeightPerturbation, buffers_preserved
from harden.training.extra_data import ExtraData, pseudo_labels
from harden.training.losses import mart_loss
from tests.helpers import full_and_interrupted
from tests.tiny_models import tiny_cnn

SPEC = "tests.tiny_models:tiny_cnn"
# the smallest useful run: 32 training images in batches of 16, no validation slice
TINY = dict(train_n=32, batch_size=16, val_n=0, steps=1, progress=False)


def tiny(seed: int = 0, width: int = 8) -> harden.HardenedModel:
    torch.manual_seed(seed)
    return harden.wrap(tiny_cnn(width=width), input_size=32, name="tiny")


def image_folder(root: Path, classes, per_class: int = 2, value: int = 255) -> str:
    """An ImageFolder tree of uniform images (a value no sample image has everywhere); returns its spec."""
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (32, 32), (value, value, value)).save(root / name / f"{i}.png")
    return f"imagefolder:{root}"


# ------------------------------------------------------------------------------------------ MART


def test_mart_loss_is_the_papers_formula_on_fixed_logits() -> None:
    gen = torch.Generator().manual_seed(0)
    nat = 3 * torch.randn(6, 4, generator=gen, dtype=torch.float64)
    adv = 3 * torch.randn(6, 4, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0, 2])
    beta = 6.0
    bce, weighted_kl = [], []
    for i in range(6):  # Wang et al. 2020, eq. 7, written out example by example
        p_adv = [math.exp(v) / sum(math.exp(u) for u in adv[i].tolist()) for v in adv[i].tolist()]
        p_nat = [math.exp(v) / sum(math.exp(u) for u in nat[i].tolist()) for v in nat[i].tolist()]
        yi = int(y[i])
        worst_other = max(p for k, p in enumerate(p_adv) if k != yi)
        bce.append(-math.log(p_adv[yi]) - math.log(1 - worst_other))
        kl = sum(pn * math.log(pn / pa) for pn, pa in zip(p_nat, p_adv))
        weighted_kl.append(kl * (1 - p_nat[yi]))
    expected = sum(bce) / 6 + beta * sum(weighted_kl) / 6
    assert mart_loss(nat, adv, y, beta=beta).item() == pytest.approx(expected, rel=1e-10)
    mart = get_method("mart").loss(adv, y, logits_nat=nat, beta=beta, label_smoothing=0.0)
    assert mart.item() == pytest.approx(expected, rel=1e-10)
    # beta weighs the KL term: beta 0 leaves the boosted cross-entropy alone
    assert mart_loss(nat, adv, y, beta=0).item() == pytest.approx(sum(bce) / 6, rel=1e-10)


def test_mart_attack_maximises_cross_entropy_from_a_small_gaussian_start() -> None:
    model = tiny().eval()
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 3])
    eps = 8 / 255
    opts = dict(eps=eps, step=2 / 255, steps=2, norm="Linf", options={})
    mart = get_method("mart").perturb(model, x, y, generator=torch.Generator().manual_seed(0), **opts)
    pgd = get_method("pgd").perturb(model, x, y, generator=torch.Generator().manual_seed(0), **opts)
    assert (mart - x).abs().max() <= eps + 1e-6 and not torch.equal(mart, pgd)
    with torch.no_grad():
        ce = [nn.functional.cross_entropy(model(v), y).item() for v in (x, mart)]
    assert ce[1] > ce[0]


# ------------------------------------------------------------------------------------------- AWP


def _batch(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    return (torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen),
            torch.randint(0, 10, (n,), generator=gen))


def test_one_awp_step_equals_the_step_computed_by_hand() -> None:
    cfg = make_config(method="pgd", steps=1, augment=False, awp=0.01, awp_warmup=0, weight_decay=5e-4)
    trainer = Trainer(tiny(), cfg, device=torch.device("cpu"), dist=DistSession())
    ref = copy.deepcopy(trainer.model)
    x_u8, y = _batch()
    eps, lr = 8 / 255, 0.1
    trainer.train_step(x_u8, y, eps=eps, lr=lr)

    # by hand: the attack (eval mode, the trainer's seeded generator), then perturb, gradient, remove, update
    x = x_u8.float().div(255)
    ref.eval()
    x_adv = training.perturb(ref, x, y, eps=eps, step=trainer.step_size * eps / cfg.eps, steps=1,
                             norm="Linf", generator=torch.Generator().manual_seed(cfg.seed))
    ref.train()
    weights = [p for p in ref.parameters() if p.dim() > 1]
    stats = {k: v.clone() for k, v in ref.state_dict().items() if "running" in k or "num_batches" in k}
    grads = torch.autograd.grad(nn.functional.cross_entropy(ref(x_adv), y), weights)
    ref.load_state_dict({**ref.state_dict(), **stats})  # the perturbation pass leaves the statistics alone
    v = [0.01 * (w.norm() / (g.norm() + 1e-20)) * g for w, g in zip(weights, grads)]
    params = list(ref.parameters())
    saved = [p.detach().clone() for p in params]
    with torch.no_grad():
        for w, d in zip(weights, v):
            w.add_(d)
    grads = torch.autograd.grad(nn.functional.cross_entropy(ref(x_adv), y), params)
    with torch.no_grad():
        for p, s, g in zip(params, saved, grads):  # SGD's first step: momentum buffer = g + wd * w
            p.copy_(s.add(g.add(s, alpha=5e-4), alpha=-lr))
    got, want = trainer.model.state_dict(), ref.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want), [k for k in want if not torch.equal(got[k], want[k])]

    plain = Trainer(tiny(), make_config(method="pgd", steps=1, augment=False), device=torch.device("cpu"),
                    dist=DistSession())
    plain.train_step(x_u8, y, eps=eps, lr=lr)
    assert not torch.equal(plain.model.net[0].weight, got["net.0.weight"])  # AWP changed the step


def test_awp_perturbation_is_removed_exactly_and_leaves_the_statistics_alone() -> None:
    cfg = make_config(method="trades", steps=1, augment=False, awp=0.05, awp_warmup=0)
    trainer = Trainer(tiny(), cfg, device=torch.device("cpu"), dist=DistSession())
    before = {k: v.clone() for k, v in trainer.model.named_parameters()}
    bn = trainer.model.net[1]
    tracked = int(bn.num_batches_tracked)
    x_u8, y = _batch()
    trainer.train_step(x_u8, y, eps=8 / 255, lr=0.0)
    after = dict(trainer.model.named_parameters())
    assert all(torch.equal(before[k], after[k]) for k in before)
    # the update's clean and adversarial forwards only, not the perturbation pass
    assert int(bn.num_batches_tracked) == tracked + 2

    model = tiny()
    awp = WeightPerturbation(model, 0.05)
    assert [p.dim() for p in awp.weights] == [4, 4, 4, 2]  # convolutions and the linear layer, no BN or bias
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = x_u8.float() / 255
    deltas = awp.compute(lambda: nn.functional.cross_entropy(model(x), y))
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    for w, d in zip(awp.weights, deltas):  # each layer moves by gamma times its own norm
        assert d.norm().item() == pytest.approx(0.05 * w.norm().item(), rel=1e-5)
    with awp.applied(deltas):
        moved = model.state_dict()
        assert not torch.equal(moved["net.0.weight"], state["net.0.weight"])
        assert torch.equal(moved["net.1.weight"], state["net.1.weight"])  # batch-norm scale untouched
        with torch.no_grad(), buffers_preserved(model):
            loss_up = nn.functional.cross_entropy(model.train()(x), y).item()
    with torch.no_grad(), buffers_preserved(model):
        loss = nn.functional.cross_entropy(model(x), y).item()
    assert loss_up > loss  # the perturbation raises the loss it came from
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_awp_waits_for_its_warmup() -> None:
    cfg = make_config(method="trades", awp=0.005, epochs=12)
    assert cfg.resolved_awp_warmup() == 10  # the paper's code: TRADES-AWP starts after 10 epochs
    assert make_config(method="pgd", awp=0.01).resolved_awp_warmup() == 0
    trainer = Trainer(tiny(), cfg, device=torch.device("cpu"), dist=DistSession())
    trainer.reseed(9)
    assert not trainer.awp_active()
    trainer.reseed(10)
    assert trainer.awp_active()


# ------------------------------------------------------------------------------------ extra data


def _spy(monkeypatch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Record every batch the trainer is given, and skip the (costly) update itself."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def step(self, x_u8, y, *, eps, lr):
        seen.append((x_u8.clone(), y.clone()))
        return torch.zeros(()), torch.zeros(())

    monkeypatch.setattr(Trainer, "train_step", step)
    return seen


def test_every_batch_holds_the_exact_share_of_extra_data(tmp_path, monkeypatch) -> None:
    extra = image_folder(tmp_path / "extra", CIFAR10_CLASSES, per_class=2)
    seen = _spy(monkeypatch)
    model = finetune(tiny(), "sample", method="pgd", epochs=2, extra_data=extra, extra_fraction=0.25,
                     augment=False, bn_recalib=False, **{**TINY, "train_n": 64})
    k = round(0.25 * 16)
    assert len(seen) == 2 * math.ceil(64 / (16 - k))  # the epoch is defined by the main data
    for xb, _ in seen:
        is_extra = (xb == 255).flatten(1).all(1)
        assert int(is_extra.sum()) == k and xb.shape[0] in (16, k + 64 % (16 - k))
        assert is_extra[-k:].all()
    info = model.provenance.finetune.extra_data
    assert info.to_dict() == {"data": extra, "n": 20, "fraction": 0.25, "per_batch": 4, "main_per_batch": 12,
                    "labels": "given", "teacher": None, "teacher_digest": None}
    # 12 batches of 4 draw 48 of the 20 extra images: each at least twice, none a third time before all have
    labels = torch.cat([yb[-k:] for _, yb in seen])
    assert torch.bincount(labels, minlength=10).min() >= 4


def test_extra_draws_split_among_processes_and_cycle_through_the_set() -> None:
    def draw(rank: int, world: int, step: int) -> list[int]:
        src = ExtraData(torch.zeros(10, 1, 1, 1, dtype=torch.uint8), torch.zeros(10, dtype=torch.long), per_batch=3,
                        seed=0, rank=rank, world=world, device=torch.device("cpu"), info={})
        return src.positions(step).tolist()

    single = [i for step in range(2) for i in draw(0, 1, step)]
    assert len(set(single)) == 6
    two = draw(0, 2, 0) + draw(1, 2, 0)  # the two processes' shares of step 0 are the single process's 6
    assert two == single
    stream = [i for step in range(5) for i in draw(0, 1, step)]
    assert sorted(stream[:10]) == list(range(10))  # every example once before any repeats
    assert draw(0, 1, 4) == draw(0, 1, 4)  # a pure function of (seed, step): nothing to checkpoint


class _ModeTeacher(nn.Module):
    """Batch norm with extreme running statistics: in eval mode it always says class 5, in train mode not."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10), nn.BatchNorm1d(10))
        with torch.no_grad():
            self.net[2].running_mean.fill_(0.0)
            self.net[2].running_mean[5] = -1000.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_pseudo_labels_come_from_the_teacher_in_eval_mode(tmp_path, monkeypatch) -> None:
    teacher = _ModeTeacher().train()
    x = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert len(set(teacher(x.float() / 255).argmax(1).tolist())) > 1  # train mode: batch statistics
    labels = pseudo_labels(teacher, x, num_classes=10, device=torch.device("cpu"), batch_size=5)
    assert labels.tolist() == [5] * 12 and teacher.training  # the caller's mode is restored
    with pytest.raises(UsageError, match="teacher gives outputs of shape \\(10,\\).*3 classes"):
        pseudo_labels(teacher, x, num_classes=3, device=torch.device("cpu"))

    # through finetune: the extra data's own labels (a folder per class) are replaced by the teacher's
    extra = image_folder(tmp_path / "unlabelled", ["a", "b"], per_class=3, value=0)
    seen = _spy(monkeypatch)
    model = finetune(tiny(), "sample", epochs=1, extra_data=extra, extra_fraction=0.5, pseudo_label=teacher,
                     augment=False, bn_recalib=False, **TINY)
    assert seen and all(yb[-8:].tolist() == [5] * 8 for _, yb in seen)
    info = model.provenance.finetune.extra_data
    assert info.labels == "pseudo" and info.teacher == "module:_ModeTeacher" and info.n == 6
    assert info.teacher_digest == training.state_digest(teacher)


# ---------------------------------------------------------------------------------------- resume


@pytest.mark.slow  # three short runs each
@pytest.mark.parametrize("options", [
    dict(method="mart", awp=0.02, awp_warmup=1, epochs=2),  # AWP starts in the resumed epoch
    dict(method="pgd", extra_fraction=0.25, epochs=2, pseudo_label="teacher"),
], ids=["mart-awp", "extra-pseudo"])
def test_resume_after_an_interruption_is_bit_exact(tmp_path, options) -> None:
    opts = {**TINY, **options}
    if "extra_fraction" in opts:
        opts["extra_data"] = image_folder(tmp_path / "extra", CIFAR10_CLASSES, per_class=1, value=128)
        opts["pseudo_label"] = tiny(seed=5)
    full, part = full_and_interrupted(tiny, tmp_path, opts)
    assert checkpoint_path_for(part).exists()
    resumed = finetune(tiny(), "sample", output=part, resume=True, **opts)
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.provenance.finetune.history[1]["loss"] == full.provenance.finetune.history[1]["loss"]
    entry = read_provenance(part).finetune
    if "awp" in options:
        assert entry.awp.to_dict() == {"gamma": 0.02, "warmup": 1, "paper": "Wu et al. 2020"} and entry.beta == 6.0
    else:
        assert entry.extra_data.labels == "pseudo" and entry.extra_data.per_batch == 4


# ------------------------------------------------------------------------------ settings, recipes


@pytest.mark.parametrize("options, message", [
    ({"awp": -0.01}, "--awp must be in \\[0, 0.1\\]"),
    ({"awp": 2}, "--awp must be in \\[0, 0.1\\]"),
    ({"awp": 0.01, "method": "fgsm-rs"}, "--awp works with --method pgd, trades, mart"),
    ({"awp": 0.005, "method": "trades", "epochs": 10}, "AWP would never start: --awp-warmup is 10"),
    ({"extra_data": "sample", "extra_fraction": 1}, "--extra-fraction must be in \\(0, 1\\)"),
    ({"extra_data": "sample", "extra_fraction": "0"}, "--extra-fraction must be in \\(0, 1\\)"),
    ({"extra_fraction": 0.5}, "--extra-fraction needs --extra-data"),
    ({"pseudo_label": "t.safetensors"}, "--pseudo-label needs --extra-data"),
    ({"extra_data": "sample", "extra_fraction": 0.01, "batch_size": 16}, "gives 0 extra examples per batch"),
])
def test_bad_awp_and_extra_settings_are_usage_errors(options, message) -> None:
    with pytest.raises(UsageError, match=message):
        make_config(**options)


def test_recipes_take_the_new_finetune_keys() -> None:
    text = ("model: {spec: tests.tiny_models:tiny_cnn, num_classes: 10, input_size: 32}\ndata: {train: sample}\n"
            "transforms: [activation:name=silu]\nfinetune: {method: mart, awp: 0.005, awp_warmup: 0, "
            "extra_data: sample, extra_fraction: 0.7, pseudo_label: teacher.safetensors}\n")
    r = parse_recipe(text, source="r.yaml")
    assert r.values["finetune"]["awp"] == 0.005 and r.values["finetune"]["extra_fraction"] == 0.7
    with pytest.raises(UsageError, match="r.yaml, line 4: finetune: --awp must be in"):
        parse_recipe(text.replace("awp: 0.005", "awp: 3"), source="r.yaml")
    entry = {"method": "mart", "eps": 8 / 255, "steps": 10, "epochs_run": 3, "kept_epoch": 2,
             "awp": {"gamma": 0.005}, "extra_data": {"fraction": 0.7}}
    assert finetune_text(entry) == "mart-10+awp 0.005+extra 0.7 eps 8/255, 3 ep (kept 2)"  # the table's column


# ------------------------------------------------------------------------------------------- CLI


def _cli(args: list[str]):
    return CliRunner().invoke(main, args, catch_exceptions=False)


@pytest.mark.parametrize("case", ["method", "gamma-negative", "gamma-absurd", "fraction", "classes", "teacher",
                                  "no-teacher"])
def test_cli_bad_input_is_one_error_line_and_writes_nothing(tmp_path, case) -> None:
    out = tmp_path / "out.safetensors"
    args = {
        "method": ["--method", "madry"],
        "gamma-negative": ["--awp", "-0.01"],
        "gamma-absurd": ["--awp", "5"],
        "fraction": ["--extra-data", "sample", "--extra-fraction", "1.5"],
        "classes": ["--extra-data", image_folder(tmp_path / "three", ["a", "b", "c"], per_class=1)],
        "teacher": ["--extra-data", "sample", "--pseudo-label", str(tmp_path / "t5.safetensors"), "--trust-code"],
        "no-teacher": ["--extra-data", "sample", "--pseudo-label", "cifar:wrn-16-1"],
    }[case]
    message = {
        "method": "Invalid value for '--method'", "gamma-negative": "--awp must be in [0, 0.1]",
        "gamma-absurd": "--awp must be in [0, 0.1]", "fraction": "--extra-fraction must be in (0, 1)",
        "classes": "has 3 classes (a, b, c...) but the main data 'sample' has 10",
        "teacher": "teacher gives outputs of shape (5,), the model being trained has 10 classes",
        "no-teacher": "--pseudo-label takes a harden .safetensors file holding the teacher's weights",
    }[case]
    if case == "teacher":
        harden.save(harden.load_model(SPEC, num_classes=5, input_size=32), tmp_path / "t5.safetensors")
    result = _cli(["finetune", SPEC, "--num-classes", "10", "--input-size", "32", "--data", "sample", "-o", str(out),
                   "--epochs", "1", "--train-n", "32", "--val-n", "0", "--quiet", *args])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and result.output.strip().count("\n") == 0
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists() and not checkpoint_path_for(out).exists()


def test_cli_records_and_inspect_shows_awp_and_extra_data(tmp_path, monkeypatch) -> None:
    _spy(monkeypatch)
    out = tmp_path / "m.safetensors"
    extra = image_folder(tmp_path / "extra", CIFAR10_CLASSES, per_class=1)
    result = _cli(["finetune", SPEC, "--num-classes", "10", "--input-size", "32", "--data", "sample", "-o", str(out),
                   "--method", "mart", "--awp", "0.005", "--awp-warmup", "0", "--extra-data", extra,
                   "--extra-fraction", "0.5", "--epochs", "1", "--train-n", "32", "--val-n", "0", "--batch-size",
                   "16", "--no-bn-recalib", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "AWP gamma 0.005, from epoch 1" in result.output
    shown = _cli(["inspect", str(out)]).output
    assert "  method mart, beta 6, 1 epochs on sample" in shown
    assert "  AWP gamma 0.005, from epoch 1" in shown
    assert f"  extra data {extra} (10 images): 8 of every 16 in a batch (fraction 0.5), its own labels" in shown


# ------------------------------------------------------------------------------ bf16, torchrun


def _steps(model: harden.HardenedModel, **settings) -> list[float]:
    cfg = make_config(method="mart", steps=1, augment=False, awp=0.01, awp_warmup=0, **settings)
    trainer = Trainer(model, cfg, device=torch.device("cpu"), dist=DistSession())
    x_u8, y = _batch(8)
    return [float(trainer.train_step(x_u8, y, eps=8 / 255, lr=0.05)[0]) / 8 for _ in range(2)]


def test_mart_with_awp_under_bf16_follows_fp32() -> None:
    fp32 = _steps(tiny())
    bf16 = _steps(tiny(), precision="bf16", channels_last=True)
    assert fp32 != bf16 and bf16 == pytest.approx(fp32, rel=0.02)  # bf16 rounding, not another computation


@pytest.mark.slow
def test_two_process_ddp_with_mart_awp_and_extra_data(tmp_path) -> None:
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    extra = image_folder(tmp_path / "extra", CIFAR10_CLASSES, per_class=2, value=200)
    out = tmp_path / "ddp.safetensors"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "harden.cli",
           "finetune", SPEC, "--num-classes", "10", "--input-size", "32", "--data", "sample", "-o", str(out),
           "--method", "mart", "--awp", "0.01", "--awp-warmup", "0", "--extra-data", extra, "--extra-fraction", "0.25",
           "--steps", "1", "--epochs", "1", "--train-n", "64", "--batch-size", "16", "--val-n", "0", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    entry = read_provenance(out).finetune
    assert entry.world_size == 2 and entry.awp.gamma == 0.01 and entry.extra_data.per_batch == 4
    assert math.isfinite(entry.history[0]["loss"])
