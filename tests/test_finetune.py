"""Adversarial fine-tuning on CPU: a tiny CNN on the bundled CIFAR-10 sample."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import harden
from harden.attacks import pgd
from harden.cli import main
from harden.data import load_dataset, load_tensors, select
from harden.errors import HardenError, UsageError
from harden.runtime.session import DistSession
from harden.serialization import read_provenance
from harden.training import (
    Trainer,
    augment,
    checkpoint_path_for,
    checkpoint_store,
    curves_path_for,
    eps_at,
    finetune,
    lr_at,
    make_config,
    recalibrate_bn,
    schedule,
)
from tests.helpers import full_and_interrupted
from tests.tiny_models import tiny_cnn

SPEC = "tests.tiny_models:tiny_cnn"
# a short run: 256 training images in batches of 64, 64 held out, PGD-2 validation
QUICK = dict(train_n=256, batch_size=64, val_n=64, val_steps=2, progress=False)


def tiny(seed: int = 0, width: int = 16) -> harden.HardenedModel:
    torch.manual_seed(seed)
    return harden.wrap(tiny_cnn(width=width), input_size=32, name="tiny")


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float = 0.0) -> float:
    model.eval()
    if eps:
        x = pgd(model, x, y, eps=eps, steps=10, step_size=eps / 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


# ------------------------------------------------------------------------------------- the result


@pytest.mark.slow
def test_pgd_at_raises_robust_accuracy_well_above_the_start() -> None:
    ds = load_dataset("sample", "test")
    x, y = load_tensors(ds, select(ds, 500, random_subset=True, seed=0))
    start = finetune(tiny(), "sample", method="clean", epochs=5, lr=0.1, schedule="onecycle", val_n=128,
                     val_steps=2, progress=False)
    eps = 8 / 255
    clean0, robust0 = accuracy(start, x, y), accuracy(start, x, y, eps)
    assert clean0 > 0.25  # the clean model learned something
    hardened = finetune(start, "sample", method="pgd", eps=eps, steps=2, epochs=4, lr=0.1, eps_warmup=0,
                        val_n=128, val_steps=3, progress=False)
    clean1, robust1 = accuracy(hardened, x, y), accuracy(hardened, x, y, eps)
    # PGD-10 at 8/255 on 500 random test images (measured 7.6% -> 17.2% on one thread, 8.6% -> 16.8% on
    # two): robust accuracy nearly doubles, at a small cost in clean accuracy
    assert robust1 >= robust0 + 0.05 and robust1 >= 1.6 * robust0, (clean0, robust0, clean1, robust1)
    assert clean1 > 0.2
    entry = hardened.provenance.finetune
    assert entry.method == "pgd" and entry.epochs_run == 4 and entry.previous.method == "clean"
    # the kept epoch is the best robust validation epoch
    best = max(h["val_robust"] for h in entry.history)
    assert entry.validation.robust_acc == best
    assert start.provenance.finetune.method == "clean"  # the input model is left as it was


# ------------------------------------------------------------------------------------------- resume


def test_resume_reproduces_an_uninterrupted_run(tmp_path) -> None:
    opts = dict(method="pgd", eps=8 / 255, steps=2, epochs=3, lr=0.05, ema=True, ema_decay=0.9, eps_warmup=1,
                **QUICK)
    full, part = full_and_interrupted(tiny, tmp_path, opts)
    ckpt = checkpoint_path_for(part)
    assert ckpt == tmp_path / "part.ckpt.pt" and ckpt.exists() and not part.exists()
    with pytest.raises(UsageError, match="--resume"):  # a new run does not silently drop the checkpoint
        finetune(tiny(), "sample", output=part, **opts)
    with pytest.raises(HardenError, match="different run.*lr"):
        finetune(tiny(), "sample", output=part, resume=True, **{**opts, "lr": 0.01})
    with pytest.raises(HardenError, match="starting weights"):
        finetune(tiny(seed=1), "sample", output=part, resume=True, **opts)
    store = checkpoint_store(ckpt)  # the interrupted run's epoch took 1000 s: the resumed run's time counts it
    payload = store.load()
    store.save({**payload, "history": json.dumps([{**h, "seconds": 1000.0} for h in json.loads(payload["history"])])})
    resumed = finetune(tiny(), "sample", output=part, resume=True, **opts)
    assert 1000.0 < resumed.provenance.finetune.seconds < 1000.0 + full.provenance.finetune.seconds + 60
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in full.provenance.finetune.history]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in resumed.provenance.finetune.history] == strip
    assert not ckpt.exists()  # removed once the output is written
    assert torch.equal(harden.load(part, base=tiny_cnn()).state_dict()["net.0.weight"], b["net.0.weight"])


def test_resume_with_the_lipschitz_penalty_is_bit_exact(tmp_path) -> None:
    """The penalty's power-iteration vectors start seeded and travel in the checkpoint."""
    opts = dict(method="fgsm-rs", epochs=2, lr=0.05, lipschitz_reg=0.05, train_n=128, batch_size=64, val_n=0,
                progress=False)
    full, part = full_and_interrupted(tiny, tmp_path, opts)
    saved = torch.load(checkpoint_path_for(part), weights_only=True)["lipschitz"]
    assert set(saved) == {"net.0", "net.3", "net.6", "net.11"}
    resumed = finetune(tiny(), "sample", output=part, resume=True, **opts)
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_nonfinite_loss_stops_keeps_the_last_good_checkpoint(tmp_path, monkeypatch) -> None:
    out = tmp_path / "model.safetensors"
    out.write_bytes(b"previous output")

    def poisoned_lr(cfg, progress):  # fine in the first epoch, NaN in the second
        return cfg.lr if progress < 0.5 else math.nan

    monkeypatch.setattr(schedule, "lr_at", poisoned_lr)  # the epoch loop reads the schedule module
    with pytest.raises(HardenError, match="non-finite in epoch 2.*last good checkpoint.*after epoch 1"):
        finetune(tiny(), "sample", output=out, force=True, method="fgsm-rs", epochs=2, log_every=1, **QUICK)
    assert out.read_bytes() == b"previous output"
    ckpt = torch.load(checkpoint_path_for(out), weights_only=True)
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


# --------------------------------------------------------------------------------------- the parts


def test_schedules_and_eps_warmup() -> None:
    cfg = make_config(lr=0.1, schedule="cosine", eps="8/255", eps_warmup=2)
    assert lr_at(cfg, 0) == pytest.approx(0.1) and lr_at(cfg, 0.5) == pytest.approx(0.05) and lr_at(cfg, 1) < 1e-12
    cfg.schedule = "multistep"
    assert [lr_at(cfg, t) for t in (0.1, 0.6, 0.9)] == pytest.approx([0.1, 0.01, 0.001])
    cfg.schedule = "onecycle"
    assert lr_at(cfg, 0) == 0 and lr_at(cfg, 0.4) == pytest.approx(0.1) and lr_at(cfg, 0.7) == pytest.approx(0.05)
    assert eps_at(cfg, 1) == pytest.approx(4 / 255) and eps_at(cfg, 3) == pytest.approx(8 / 255)
    assert cfg.resolved_step_size() == pytest.approx(2 / 255)  # 2.5 eps / 10 steps, the seeds' 2/255
    assert make_config(method="fgsm-rs", eps=0.04).resolved_step_size() == pytest.approx(0.05)


@pytest.mark.parametrize("options, message", [
    ({"eps": 0}, "--eps must be in"), ({"eps": "2"}, "--eps must be in"), ({"batch_size": 0}, "--batch-size"),
    ({"method": "madry"}, "--method: unknown training method .madry.; did you mean: mart"),
    ({"epoch": 3}, "did you mean: epochs"),
    ({"eps": "eight"}, "not a number"),
])
def test_bad_settings_are_usage_errors(options, message) -> None:
    with pytest.raises(UsageError, match=message):
        make_config(**options)


def test_augment_is_a_padded_crop_or_its_mirror() -> None:
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8) + 1
    x = x.repeat(16, 1, 1, 1)
    out = augment(x, torch.Generator().manual_seed(0), pad=2)
    assert out.shape == x.shape
    padded = nn.functional.pad(x, (2, 2, 2, 2))
    seen = set()
    for i in range(len(x)):
        found = [(dy, dx, f) for dy in range(5) for dx in range(5) for f in (0, 1)
                 if torch.equal(out[i], (lambda c: c.flip(2) if f else c)(padded[i, :, dy:dy + 8, dx:dx + 8]))]
        assert found, f"example {i} is not a crop of its padded image"
        seen.add(found[0])
    assert len(seen) > 8 and {f for _, _, f in seen} == {0, 1}
    u8 = augment(x.clamp(max=255).to(torch.uint8), torch.Generator().manual_seed(0), pad=2)
    assert u8.dtype == torch.uint8


def test_recalibrate_bn_matches_the_data_statistics() -> None:
    net = tiny_cnn()
    bn = net[1]
    bn.running_mean.fill_(100.0)
    bn.momentum = 0.3
    net.eval()
    batches = [torch.rand(16, 3, 32, 32) for _ in range(3)]
    assert recalibrate_bn(net, batches) == 48
    with torch.no_grad():
        feats = torch.cat([net[0](b) for b in batches])
    assert torch.allclose(bn.running_mean, feats.mean((0, 2, 3)), atol=1e-5)
    assert bn.momentum == 0.3 and not net.training


@pytest.mark.parametrize("mode, updates", [("eval", 1), ("train", 4)])
def test_training_attacks_run_in_eval_mode_unless_asked(mode, updates) -> None:
    model = tiny()
    cfg = make_config(method="pgd", steps=3, attack_mode=mode, augment=False)
    trainer = Trainer(model, cfg, device=torch.device("cpu"), dist=DistSession())
    bn = trainer.model.net[1]
    before = int(bn.num_batches_tracked)
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    loss, correct = trainer.train_step(x, torch.randint(0, 10, (8,)), eps=8 / 255, lr=0.01)
    assert torch.isfinite(loss) and 0 <= int(correct) <= 8
    # batch-norm statistics move once for the update, plus once per attack step in train mode
    assert int(bn.num_batches_tracked) - before == updates


@pytest.mark.parametrize("method", ["trades", "fgsm-rs"])
def test_other_methods_train_and_record_their_settings(method, tmp_path) -> None:
    out = tmp_path / f"{method}.safetensors"
    model = finetune(tiny(), "sample", output=out, method=method, steps=2, epochs=1, **QUICK)
    entry = read_provenance(out).finetune
    assert entry.method == method and entry.epochs_run == 1 and math.isfinite(entry.history[0]["loss"])
    assert entry.beta == (6.0 if method == "trades" else None)
    assert entry.steps == (2 if method == "trades" else 1)
    assert entry.bn_recalibrated_on == 256 and entry.precision == "fp32"
    assert model.provenance.finetune.data == "sample"


def test_lipschitz_regularizer_enters_the_loss() -> None:
    opts = dict(method="fgsm-rs", epochs=1, train_n=128, batch_size=64, val_n=0, progress=False)
    plain = finetune(tiny(), "sample", **opts)
    reg = finetune(tiny(), "sample", lipschitz_reg=0.05, **opts)
    assert reg.provenance.finetune.lipschitz_reg == 0.05 and plain.provenance.finetune.lipschitz_reg is None
    assert reg.provenance.finetune.history[0]["loss"] != plain.provenance.finetune.history[0]["loss"]
    assert reg.provenance.finetune.kept == "last"  # no validation slice: the last epoch is kept


# --------------------------------------------------- the GPU settings, run on the CPU for their logic


def _three_steps(model: harden.HardenedModel, **settings) -> tuple[list[float], Trainer]:
    cfg = make_config(method="pgd", steps=2, augment=False, **settings)
    trainer = Trainer(model, cfg, device=torch.device("cpu"), dist=DistSession())
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, 10, (16,), generator=gen)
    return [float(trainer.train_step(x, y, eps=8 / 255, lr=0.05)[0]) / 16 for _ in range(3)], trainer


def test_bf16_autocast_and_channels_last_follow_fp32() -> None:
    fp32, _ = _three_steps(tiny())
    bf16, trainer = _three_steps(tiny(), precision="bf16", channels_last=True)
    assert trainer.bf16 and trainer.model.net[0].weight.dtype == torch.float32  # master weights stay fp32
    assert trainer.model.net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert fp32 != bf16 and bf16 == pytest.approx(fp32, rel=0.01)  # bf16 rounding, not another computation
    assert bf16[-1] < bf16[0]
    _, trainer = _three_steps(tiny(), precision="bf16", lipschitz_reg=0.01)
    assert {v.dtype for v in trainer.penalty.vectors.values()} == {torch.float32}  # the penalty stays in fp32


@pytest.mark.slow
def test_torch_compile_gives_the_eager_steps() -> None:
    eager, _ = _three_steps(tiny())
    compiled, trainer = _three_steps(tiny(), compile=True)
    assert trainer.objective is not trainer.model and trainer.attack_model is not trainer.model
    assert compiled == pytest.approx(eager, rel=1e-4)


@pytest.mark.slow
def test_finetune_with_gpu_settings_writes_a_plain_fp32_model(tmp_path) -> None:
    out = tmp_path / "m.safetensors"
    model = finetune(tiny(), "sample", output=out, method="trades", steps=2, epochs=1, precision="bf16",
                     channels_last=True, compile=True, **QUICK)
    entry = read_provenance(out).finetune
    assert entry.precision == "bf16" and math.isfinite(entry.history[0]["loss"])
    weights = model.state_dict()
    assert not any("_orig_mod" in k for k in weights)
    assert all(v.dtype in (torch.float32, torch.int64) and v.is_contiguous() for v in weights.values())
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(harden.load(out, base=tiny_cnn()).eval()(x), model.eval()(x))


# ---------------------------------------------------------------------------------------------- CLI


def _cli(args: list[str]):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_cli_finetune_writes_model_recipe_entry_and_curves(tmp_path) -> None:
    out = tmp_path / "tiny-pgd.safetensors"
    result = _cli(["finetune", SPEC, "--num-classes", "10", "--input-size", "32", "--data", "sample", "-o", str(out),
                   "--steps", "2", "--epochs", "2", "--eps", "4/255", "--train-n", "192", "--val-n", "64",
                   "--val-steps", "2", "--batch-size", "64", "--schedule", "multistep", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "kept epoch" in result.output and f"wrote {out}" in result.output
    rec = read_provenance(out)
    assert rec.model.spec == SPEC and rec.transforms == []
    entry = rec.finetune
    assert entry.eps == pytest.approx(4 / 255) and entry.schedule == "multistep" and entry.epochs_run == 2
    assert entry.validation.n == 64 and entry.validation.attack == "pgd-2"
    assert entry.train_n == 192 and len(entry.history) == 2
    png = curves_path_for(out)
    assert png == tmp_path / "tiny-pgd.curves.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loaded = harden.load(out, trust_code=True)
    assert loaded(torch.rand(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("args, code, message", [
    (["--num-classes", "5"], 2, "has 10 classes but the model has 5 outputs"),
    (["--batch-size", "0"], 2, "--batch-size must be at least 1"),
    (["--eps", "2"], 2, "--eps must be in (0, 1]"),
    (["--eps", "0"], 2, "--eps must be in (0, 1]"),
])
def test_cli_bad_input_is_one_line_and_overwrites_nothing(tmp_path, args, code, message) -> None:
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"keep me")
    base = ["finetune", SPEC, "--num-classes", "10", "--input-size", "32", "--data", "sample", "-o", str(out),
            "--force", "--quiet"]
    result = _cli(base + args)
    assert result.exit_code == code
    assert message in result.output and "Traceback" not in result.output
    assert result.output.strip().count("\n") == 0 and result.output.startswith("error: ")
    assert out.read_bytes() == b"keep me"


def test_cli_refuses_existing_output_and_a_foreign_checkpoint(tmp_path) -> None:
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"keep me")
    common = [SPEC, "--num-classes", "10", "--input-size", "32", "--data", "sample", "-o", str(out), "--quiet"]
    result = _cli(["finetune", *common])
    assert result.exit_code == 2 and "exists; pass --force" in result.output and out.read_bytes() == b"keep me"
    out.unlink()
    ckpt = checkpoint_path_for(out)
    torch.save({"format": "harden.checkpoint/1", "fingerprint": json.dumps({"data": "imagefolder:elsewhere"})}, ckpt)
    before = ckpt.read_bytes()
    result = _cli(["finetune", *common, "--resume"])
    assert result.exit_code == 1 and "comes from a different run" in result.output and "Traceback" not in result.output
    assert ckpt.read_bytes() == before and not out.exists()


def test_throughput_benchmark_runs_on_cpu_with_tiny_settings(tmp_path) -> None:
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "train_throughput.py"
    spec = importlib.util.spec_from_file_location("train_throughput", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.main(["--model", SPEC, "--steps", "1", "--iters", "2", "--warmup", "1", "--batch-size", "16",
                      "--n", "64", "--json", str(tmp_path / "bench.json")])
    figures = json.loads((tmp_path / "bench.json").read_text())
    assert figures == out and figures["device_type"] == "cpu" and figures["harden_precision"] == "fp32"
    assert set(figures["images_per_second"]) == {"reference", "reference-gpu-data", "harden"}
    assert all(v > 0 for v in figures["images_per_second"].values()) and figures["speedup"] > 0


# --------------------------------------------------------------------------- the validation attack


def _linear_margin_case() -> tuple[harden.HardenedModel, torch.Tensor, torch.Tensor]:
    """A linear two-class model and images whose every pixel is 0.6 (class 0) or 0.4 (class 1): each is
    misclassified once the mean pixel moves by 0.1, i.e. within eps 0.2 but not within a step of eps/4."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    with torch.no_grad():
        net[1].weight.copy_(torch.stack([torch.ones(48), -torch.ones(48)]))
        net[1].bias.copy_(torch.tensor([-24.0, 24.0]))
    x = torch.cat([torch.full((8, 3, 4, 4), 153), torch.full((8, 3, 4, 4), 102)]).to(torch.uint8)
    return harden.wrap(net, input_size="3x4x4", num_classes=2), x, torch.tensor([0] * 8 + [1] * 8)


@pytest.mark.parametrize(("attack", "steps", "robust"), [("pgd", 1, 100.0), ("apgd-ce", 5, 0.0)])
def test_the_validation_attack_is_pgd_or_apgd_ce(attack, steps, robust) -> None:
    model, x, y = _linear_margin_case()
    cfg = make_config(method="pgd", eps=0.2, val_attack=attack, val_steps=steps, batch_size=8)
    trainer = Trainer(model, cfg, device=torch.device("cpu"), dist=DistSession())
    assert trainer.validate(x, y) == (100.0, robust)  # one PGD step of eps/4 cannot reach the boundary; APGD does


def test_apgd_ce_validation_is_recorded_and_older_checkpoints_still_resume() -> None:
    from harden.training.checkpoint import fingerprinted_config

    model = finetune(tiny(), "sample", method="fgsm-rs", epochs=1, val_attack="apgd-ce", **{**QUICK, "val_steps": None})
    entry = model.provenance.finetune
    assert entry.validation.attack == "apgd-ce-25" and entry.validation.robust_acc <= entry.validation.clean_acc
    default = fingerprinted_config(make_config())
    assert "val_attack" not in default and default["val_steps"] == 10  # as checkpoints before --val-attack hold it
    assert fingerprinted_config(make_config(val_attack="apgd-ce"))["val_steps"] == 25
