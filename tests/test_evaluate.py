"""harden evaluate: exact agreement with pyautoattack, resume, two-process sharding, checks, bad input."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import harden
from harden import evaluation
from harden.attacks import STANDARD_STAGES
from harden.cli import main
from harden.data import load_dataset, load_tensors, select
from harden.serialization import read_reports
from tests.helpers import importable_module, one_thread, train_on_sample

REPO = Path(__file__).resolve().parents[1]
AA_EXAMPLES = Path(__import__("pyautoattack").__file__).parent / "examples"
TINY_MODULE = "harden_eval_tinynets"
N, BATCH, EPS = 32, 5, 2 / 255

TINY_SOURCE = '''
from torch import nn


def TinyNet(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))
'''


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory):
    with importable_module(tmp_path_factory.mktemp("tinynets"), TINY_MODULE, TINY_SOURCE) as d:
        yield d


@pytest.fixture(scope="module")
def tiny_file(tiny_dir: Path) -> Path:
    """A tiny CNN trained for a few epochs on the bundled sample (about 30% clean accuracy)."""
    torch.manual_seed(0)
    model = train_on_sample(harden.load_model(f"{TINY_MODULE}:TinyNet", num_classes=10, input_size=32), epochs=5,
                            lr=1e-2)
    path = tiny_dir / "tiny.safetensors"
    harden.save(model, path)
    return path


@pytest.fixture(scope="module")
def tiny(tiny_file: Path) -> nn.Module:
    return harden.load(tiny_file, trust_code=True)


def _fast(model, **kw):
    args = dict(attack="autoattack", fast=True, eps=EPS, n=N, random_subset=True, seed=0, batch_size=BATCH,
                device="cpu")
    args.update(kw)
    return evaluation.evaluate(model, "sample", **args)


@pytest.fixture(scope="module")
def fast_ref(tiny: nn.Module) -> dict:
    """The uninterrupted one-process --fast report every other run is compared with."""
    return _fast(tiny)


def _sample_tensors(n: int):
    ds = load_dataset("sample", "test", image_size=32)
    return load_tensors(ds, select(ds, n, random_subset=True, seed=0))


def _direct_autoattack(model, x, y, *, attacks, eps, batch_size):
    """pyautoattack called directly; returns robust flags and its logged accuracies."""
    from pyautoattack import AutoAttack

    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    logger = logging.getLogger("auto-attack")
    handler, level = Keep(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        aa = AutoAttack(model, norm="Linf", eps=eps, version="standard", device="cpu", seed=0)
        aa.attacks_to_run = list(attacks)
        with torch.no_grad():
            _, y_adv = aa.run_standard_evaluation(x, y, batch_size=batch_size)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    logged = {"clean": float(re.search(r"initial accuracy: ([\d.]+)%", " ".join(messages)).group(1))}
    for m in messages:
        hit = re.match(r"robust accuracy after ([A-Z-]+): ([\d.]+)%", m)
        if hit:
            logged[hit.group(1).lower()] = float(hit.group(2))
    return (y_adv == y).tolist(), logged


def _robust_flags(report: dict) -> list[bool]:
    return [o == "robust" for o in report["examples"]["outcome"]]


# ------------------------------------------------------------------------------ exact agreement


def test_fast_matches_a_direct_pyautoattack_call(tiny):
    # 128 images at 4/255: on the tiny model APGD-CE breaks many, APGD-T several more and many survive both
    # (33 -> 14 -> 11 of 128 with Pillow 13 and torch 2.14; at 64 images and 3/255 APGD-T broke none more
    # with those, 5 more with older ones), so the premise below holds by a margin
    n, bs, eps = 128, 16, 4 / 255
    report = _fast(tiny, n=n, eps=eps, batch_size=bs)
    x, y = _sample_tensors(n)
    assert report["examples"]["labels"] == y.tolist()
    flags, logged = _direct_autoattack(tiny, x, y, attacks=["apgd-ce", "apgd-t"], eps=eps, batch_size=bs)
    assert _robust_flags(report) == flags
    assert report["robust_correct"] == sum(flags)
    accs = {row["attack"]: row["acc"] for row in report["per_attack"]}
    assert logged == pytest.approx({k: round(v, 2) for k, v in accs.items()}, abs=0.006)
    # not vacuous: APGD-CE breaks some examples, APGD-T more, and some survive both
    assert accs["clean"] > accs["apgd-ce"] > accs["apgd-t"] > 0
    assert report["attacks"] == ["apgd-ce", "apgd-t"] and report["version"] == "fast"
    assert "autoattack_acc" not in report  # only the standard version is an AutoAttack number


@pytest.mark.slow
def test_standard_matches_a_direct_pyautoattack_call(tiny):
    n, bs, eps = 12, 12, 1 / 255
    report = evaluation.evaluate(tiny, "sample", attack="autoattack", eps=eps, n=n, random_subset=True, seed=0,
                                 batch_size=bs, device="cpu", check_examples=0)
    x, y = _sample_tensors(n)
    flags, logged = _direct_autoattack(tiny, x, y, attacks=STANDARD_STAGES, eps=eps, batch_size=bs)
    assert _robust_flags(report) == flags
    assert [r["attack"] for r in report["per_attack"]] == ["clean", "apgd-ce", "apgd-t", "fab-t", "square"]
    assert logged == pytest.approx({r["attack"]: round(r["acc"], 2) for r in report["per_attack"]}, abs=0.006)
    assert report["per_attack"][-1]["attacked"] > 0  # Square really ran
    assert report["autoattack_acc"] == report["robust_acc"]
    assert report["robustbench"]["autoattack_acc"] == f"{report['robust_acc']:.2f}"
    assert report["robustbench"]["eps"] == "1/255"


def test_report_fields(fast_ref):
    for key in ("clean_acc", "robust_acc", "per_attack", "n", "eps", "norm", "seed", "selection", "seconds",
                "device", "versions", "warnings", "robustbench", "batch_size", "examples"):
        assert key in fast_ref, key
    assert fast_ref["n"] == N and fast_ref["eps_text"] == "2/255" and fast_ref["seed"] == 0
    assert fast_ref["selection"]["selection"] == "random" and fast_ref["selection"]["split"] == "test"
    assert fast_ref["versions"]["pyautoattack"] and fast_ref["versions"]["torch"]
    outcome = fast_ref["examples"]["outcome"]
    assert outcome.count("robust") == fast_ref["robust_correct"]
    assert outcome.count("misclassified") == N - fast_ref["clean_correct"]
    assert fast_ref["robust_acc"] == pytest.approx(100 * fast_ref["robust_correct"] / N)
    assert fast_ref.robust_acc == fast_ref["robust_acc"] and fast_ref.per_attack[0].attack == "clean"
    json.dumps(fast_ref.to_dict())


# ------------------------------------------------------------------------------------- resume


class _Stop(Exception):
    pass


def test_interrupted_run_resumes_to_the_same_result(tiny, fast_ref, tmp_path):
    report = tmp_path / "r.json"
    progress = Path(f"{report}.progress")
    calls: list[dict] = []

    def stop_in_apgd_ce(info):
        calls.append(info)
        if info["stage"] == "apgd-ce":
            raise _Stop

    with pytest.raises(_Stop):
        _fast(tiny, report=report, on_batch=stop_in_apgd_ce)
    assert not report.exists()
    state = json.loads(progress.read_text())
    assert state["stage"] == 1 and state["batches_done"] == 1  # clean pass done, one APGD-CE batch done
    clean_batches = -(-N // BATCH)
    assert len(calls) == clean_batches + 1

    # another run's progress is refused, not silently mixed in
    with pytest.raises(harden.UsageError, match="another run"):
        _fast(tiny, report=report, resume=True, eps=3 / 255)

    resumed_calls: list[dict] = []
    result = _fast(tiny, report=report, resume=True, on_batch=resumed_calls.append)
    assert result["resumed"] is True
    assert resumed_calls[0]["stage"] == "apgd-ce" and all(c["stage"] != "clean" for c in resumed_calls)
    assert result["examples"] == fast_ref["examples"]
    assert [(r["attack"], r["correct"]) for r in result["per_attack"]] == \
        [(r["attack"], r["correct"]) for r in fast_ref["per_attack"]]
    assert json.loads(report.read_text())["robust_acc"] == fast_ref["robust_acc"]
    assert not progress.exists()


def test_cli_resume(tiny_file, tmp_path):
    report = tmp_path / "r.json"
    args = ["evaluate", str(tiny_file), "--trust-code", "--data", "sample", "-n", "12", "--random-subset",
            "--attack", "pgd", "--steps", "3", "--batch-size", "4", "--report", str(report), "-q"]
    whole = _cli(args[:-3] + ["--json", "-q"])
    expected = json.loads(whole.stdout)

    def stop(info):
        if info["stage"] == "pgd-3":
            raise _Stop

    with pytest.raises(_Stop):
        evaluation.evaluate(harden.load(tiny_file, trust_code=True), "sample", n=12, random_subset=True,
                            attack="pgd", steps=3, batch_size=4, eps="8/255", device="cpu", report=report,
                            on_batch=stop)
    res = _cli(args + ["--resume"])
    assert res.exit_code == 0, res.output
    assert "resumed from" in res.output
    assert json.loads(report.read_text())["examples"] == expected["examples"]


# ---------------------------------------------------------------------------------- two ranks


def _env(tiny_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tiny_dir), str(REPO), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.mark.slow
def test_two_processes_give_the_one_process_result(tiny_dir, tiny_file, fast_ref, tmp_path):
    report = tmp_path / "two.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "harden.cli", "evaluate", str(tiny_file), "--trust-code", "--data", "sample", "-n", str(N),
           "--random-subset", "--fast", "--eps", "2/255", "--batch-size", str(BATCH), "--device", "cpu",
           "--report", str(report), "--quiet"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(tiny_dir), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads(report.read_text())
    assert two["world_size"] == 2
    assert two["examples"] == fast_ref["examples"]
    assert [(r["attack"], r["correct"]) for r in two["per_attack"]] == \
        [(r["attack"], r["correct"]) for r in fast_ref["per_attack"]]
    assert proc.stdout.count("robust accuracy:") == 1  # only rank 0 prints


# --------------------------------------------------------------------------------------- checks


class _Masked(nn.Module):
    """Rounds its input to 8 bits first: the input gradient is exactly zero (gradient masking)."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, x):
        return self.base(torch.round(x * 255) / 255)


class _BatchNormLeftInTraining(nn.Module):
    """A model whose ``train(False)`` leaves its batch norms training (a common user mistake)."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.training = True
        return self

    def forward(self, x):
        return self.base(x)


def _names(report: dict) -> set[str]:
    return {w["name"] for w in report["warnings"]}


def test_masked_gradients_are_reported(tiny):
    x, y = _sample_tensors(16)
    report = evaluation.evaluate(_Masked(tiny), (x, y), attack="autoattack", fast=True, eps=EPS, batch_size=16,
                                 device="cpu", check_examples=16)
    names = {(w["source"], w["name"]) for w in report["warnings"]}
    assert ("harden", "zero-gradients") in names        # harden's clean-gradient check
    assert ("autoattack", "zero-gradients") in names    # AutoAttack's own (APGD-T), captured from its logger
    clean = evaluation.evaluate(tiny, (x, y), attack="apgd-ce", eps=EPS, batch_size=16, device="cpu",
                               check_examples=16)
    assert "zero-gradients" not in _names(clean)
    assert report["robust_acc"] > clean["robust_acc"]  # the masking hides the model's weakness


def test_batchnorm_left_in_train_mode_is_reported(tiny_file):
    model = _BatchNormLeftInTraining(harden.load(tiny_file, trust_code=True))
    model.train()
    x, y = _sample_tensors(8)
    report = evaluation.evaluate(model, (x, y), attack="pgd", steps=2, eps=EPS, batch_size=8, device="cpu",
                                 check_examples=8)
    assert {"train-mode", "buffers-changed"} <= _names(report)
    assert model.base.net[0].training  # the caller's modes are restored afterwards
    fine = evaluation.evaluate(harden.load(tiny_file, trust_code=True), (x, y), attack="pgd", steps=2, eps=EPS,
                               batch_size=8, device="cpu", check_examples=8)
    assert not {"train-mode", "buffers-changed"} & _names(fine)


def test_softmax_outputs_and_unscaled_inputs_are_reported(tiny):
    x, y = _sample_tensors(8)
    probs = nn.Sequential(tiny, nn.Softmax(dim=1))
    report = evaluation.evaluate(probs, (x, y), attack="fgsm", eps=EPS, device="cpu", check_examples=0)
    names = {(w["source"], w["name"]) for w in report["warnings"]}
    assert ("harden", "not-logits") in names and ("autoattack", "softmax-output") in names
    shifted = evaluation.evaluate(tiny, (x * 2 - 1, y), attack="fgsm", eps=EPS, device="cpu", check_examples=0)
    assert "inputs-out-of-range" in _names(shifted)
    assert "inputs-out-of-range" not in _names(evaluation.evaluate(tiny, (x, y), attack="fgsm", eps=EPS,
                                                                   device="cpu", check_examples=0))


class _Lookup(nn.Module):
    """Knows the clean images: right at distance 0 or beyond ``radius``, wrong in between (no gradient)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, radius: float) -> None:
        super().__init__()
        self.register_buffer("xs", x.flatten(1).clone())
        self.register_buffer("ys", y.clone())
        self.radius = radius

    def forward(self, x):
        d = (x.flatten(1)[:, None, :] - self.xs[None]).abs().amax(-1)
        dist, j = d.min(1)
        label = self.ys[j]
        right = (dist == 0) | (dist > self.radius)
        out = torch.where(right, label, (label + 1) % 10)
        return nn.functional.one_hot(out, 10).float() * 5 + 0 * x.flatten(1)[:, :1]


def test_accuracy_rising_with_eps_is_reported(tmp_path):
    x, y = _sample_tensors(8)
    model = _Lookup(x, y, radius=3 / 255)
    report = evaluation.evaluate(model, (x, y), attack="pgd", steps=2, eps=2 / 255, device="cpu",
                                 eps_sweep="0,1/255,6/255", check_examples=8)
    names = _names(report)
    assert "larger-eps-raises-accuracy" in names
    rows = {r["eps_text"]: r["robust_acc"] for r in report["eps_sweep"]}
    assert rows == {"0": 100.0, "1/255": 0.0, "6/255": 100.0}
    png = evaluation.plot_sweep(report, tmp_path / "sweep.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_strength_check_compares_with_pgd(tiny):
    from harden.evaluation.honesty_checks import check_strength

    x, y = _sample_tensors(16)
    with torch.no_grad():
        keep = tiny(x).argmax(1) == y
    x, y = x[keep], y[keep]
    # claim the main attack left every example robust: PGD-5 breaks several, so the check must object
    warns, counts = check_strength(tiny, x, y, eps=8 / 255, norm="Linf", seed=0,
                                   final_robust=torch.ones(len(y), dtype=torch.bool), final_name="weak")
    assert counts["pgd5"] < len(y) - 1 and [w.name for w in warns] == ["more-steps-raise-accuracy"]
    warns, _ = check_strength(tiny, x, y, eps=8 / 255, norm="Linf", seed=0,
                              final_robust=torch.zeros(len(y), dtype=torch.bool), final_name="strong")
    assert warns == []



def test_fixed_step_attack_is_checked_against_apgd(tiny):
    from harden.evaluation.checking import check_against_apgd
    from harden.evaluation.honesty_checks import WarningLog

    x, y = _sample_tensors(16)
    with torch.no_grad():
        keep = tiny(x).argmax(1) == y
    x, y = x[keep], y[keep]
    # claim PGD left every example robust: APGD-CE breaks most of them, so the check must object
    log, before = WarningLog(), torch.get_rng_state()
    counts = check_against_apgd(tiny, x, y, torch.ones(len(y), dtype=torch.bool), eps=8 / 255, norm="Linf", seed=0,
                                name="pgd-20", log=log)
    assert torch.equal(torch.get_rng_state(), before)  # APGD seeds the global generator; the caller's is kept
    assert counts["robust_only_under_attack"] == len(y) - counts["apgd-ce25"] > 3
    assert [w.name for w in log.items()] == ["weaker-than-apgd"] and "pgd-20 overstates" in log.items()[0].message
    log = WarningLog()  # PGD left none robust: nothing to overstate
    check_against_apgd(tiny, x, y, torch.zeros(len(y), dtype=torch.bool), eps=8 / 255, norm="Linf", seed=0,
                       name="pgd-20", log=log)
    assert log.items() == []


def test_a_weak_pgd_evaluation_is_flagged(tiny):
    x, y = _sample_tensors(16)
    # one PGD step of 1e-6 from the start: it breaks almost nothing that the random start did not
    report = evaluation.evaluate(tiny, (x, y), attack="pgd", steps=1, step_size=1e-6, eps=8 / 255, device="cpu",
                                 check_examples=16)
    assert "weaker-than-apgd" in _names(report)
    assert report["strength_check"]["robust_only_under_attack"] > 3

def test_check_helpers():
    from harden.evaluation import honesty_checks as checks

    x = torch.full((3, 1, 2, 2), 0.5)
    adv = x.clone()
    adv[0, 0, 0, 0] += 0.02          # inside an eps of 0.03
    adv[1, 0, 0, 0] += 0.05          # outside
    adv[2, 0, 0, 0] = 1.2            # outside [0, 1] (and the ball)
    assert checks.check_perturbation(x, adv, 0.03, "Linf") == 2
    logits = torch.randn(4, 10)
    assert checks.check_outputs(logits) == []
    assert [w.name for w in checks.check_outputs(logits.softmax(1))] == ["not-logits"]
    assert "log-probabilities" in checks.check_outputs(logits.log_softmax(1))[0].message
    assert checks.check_sweep([(0.0, 10), (0.01, 5), (0.02, 5)], 20) == []
    assert [w.name for w in checks.check_sweep([(0.0, 10), (0.01, 2), (0.02, 9)], 20)] == ["larger-eps-raises-accuracy"]
    log = checks.WarningLog()
    log.add("a", "same")
    log.add("a", "same")
    log.merge_max([{"name": "a", "message": "same", "source": "harden", "count": 1}])
    assert log.as_dicts() == [{"name": "a", "message": "same", "source": "harden", "count": 2}]


@pytest.mark.slow
def test_pretrained_resnet18_from_pyautoattack(tmp_path):
    """pyautoattack's own CIFAR-10 ResNet-18 loads as a user model and is accurate but not robust."""
    model = harden.load_model("pyautoattack.examples.resnet:ResNet18", weights=AA_EXAMPLES / "model_test.pt",
                              input_size=32)
    report = evaluation.evaluate(model, "sample", attack="fgsm", eps=8 / 255, n=16, random_subset=True,
                                 batch_size=16, device="cpu", check_examples=0)
    assert report["clean_acc"] >= 75
    assert report["robust_acc"] <= report["clean_acc"] - 40


# ------------------------------------------------------------------------------------------- CLI


def _cli(args: list[str]):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_cli_report_into_and_inspect(tiny_file, tmp_path):
    model = tmp_path / "model.safetensors"
    model.write_bytes(tiny_file.read_bytes())
    report = tmp_path / "out" / "r.json"
    res = _cli(["evaluate", str(model), "--trust-code", "--data", "sample", "-n", "8", "--attack", "pgd",
                "--steps", "3", "--eps", "0.01", "--seed", "3", "--report", str(report), "--into", str(model), "-q"])
    assert res.exit_code == 0, res.output
    assert "robust accuracy:" in res.output and "pgd-3" in res.output
    data = json.loads(report.read_text())
    assert data["eps"] == 0.01 and data["seed"] == 3 and data["attacks"] == ["pgd-3"] and data["n"] == 8
    stored = read_reports(model)
    assert len(stored) == 1 and stored[0]["robust_acc"] == data["robust_acc"] and "examples" not in stored[0]
    shown = _cli(["inspect", str(model)])
    assert "reports (1)" in shown.output and f"robust_acc={data['robust_acc']}" in shown.output
    again = _cli(["evaluate", str(model), "--trust-code", "--data", "sample", "-n", "8", "--attack", "pgd",
                  "--steps", "3", "--eps", "0.01", "--seed", "3", "--json", "-q"])
    assert json.loads(again.stdout)["examples"] == data["examples"]  # same seed, same numbers


def test_cli_eps_sweep_table_and_plot(tiny_file, tmp_path, monkeypatch):
    from harden.evaluation import honesty_checks as checks

    # a failed check is printed on the terminal as well as stored in the report
    monkeypatch.setattr(checks, "check_eval_mode", lambda model: [checks.CheckWarning("train-mode", "pretend")])
    report = tmp_path / "s.json"
    res = _cli(["evaluate", str(tiny_file), "--trust-code", "--data", "sample", "-n", "8", "--attack", "fgsm",
                "--eps", "2/255", "--eps-sweep", "0,2/255,8/255", "--report", str(report), "-q"])
    assert res.exit_code == 0, res.output
    assert re.search(r"8/255\s+[\d.]+%", res.output)
    assert "warning [train-mode]: pretend" in res.output
    rows = json.loads(report.read_text())["eps_sweep"]
    assert [r["eps_text"] for r in rows] == ["0", "2/255", "8/255"]
    assert rows[0]["robust_acc"] >= rows[1]["robust_acc"] >= rows[2]["robust_acc"]
    assert all(r["robust_ci95"][0] <= r["robust_acc"] <= r["robust_ci95"][1] for r in rows)
    assert re.search(r"8/255\s+[\d.]+%\s+[\d.]+ to [\d.]+", res.output)  # the interval is printed too
    assert (tmp_path / "s.eps-sweep.png").read_bytes()[:4] == b"\x89PNG"


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from PIL import Image

    root = tmp_path_factory.mktemp("bad")
    empty = root / "empty"
    for cls in ("a", "b"):
        (empty / "test" / cls).mkdir(parents=True)
    three = root / "three"
    for i, cls in enumerate(("a", "b", "c")):
        (three / cls).mkdir(parents=True)
        Image.new("RGB", (32, 32), (40 * i, 0, 0)).save(three / cls / "0.png")
    return {"empty": empty, "three": three}


@pytest.mark.parametrize("args, needle, code", [
    (["--eps", "0"], "eps must be positive", 2),
    (["--eps", "-1/255"], "eps must be positive", 2),
    (["--eps", "8"], "at most 1", 2),
    (["--eps", "eight"], "eps must be a number", 2),
    (["--attack", "pgdd"], "unknown attack 'pgdd'; did you mean: pgd", 2),
    (["--norm", "L3"], "unknown norm", 2),
    (["--fast", "--attack", "pgd"], "--fast applies to --attack autoattack", 2),
    (["--resume"], "--resume needs --report", 2),
    (["--batch-size", "0"], "--batch-size must be positive", 2),
    (["--data", "imagefolder:/no/such/dir"], "does not exist", 2),
    (["--data", "cifar10:/no/such/dir"], "pass --download", 2),
    (["--data", "EMPTY"], "holds no images", 2),
    (["--data", "THREE"], "the model has 10 classes but", 2),
    (["--data", "nope"], "unknown data source", 2),
])
def test_cli_bad_input(tiny_file, bad_data, tmp_path, args, needle, code):
    args = [a.replace("EMPTY", f"imagefolder:{bad_data['empty']}").replace("THREE", f"imagefolder:{bad_data['three']}")
            for a in args]
    report = tmp_path / "r.json"
    base = ["evaluate", str(tiny_file), "--trust-code", "-n", "4", "-q"]
    if "--resume" not in args:
        base += ["--report", str(report)]
    if "--data" not in args:
        base += ["--data", "sample"]
    res = CliRunner().invoke(main, base + args)
    assert res.exit_code == code, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], res.output
    assert "Traceback" not in res.output
    assert list(tmp_path.iterdir()) == []  # no report, no progress file, no temporary left


def test_cli_bad_input_in_a_real_process(tiny_dir, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "harden.cli", "evaluate", "resnet18", "--data", "sample",
                           "--eps", "0", "--report", str(tmp_path / "r.json")],
                          env=_env(tiny_dir), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: eps must be positive, got 0"
    assert not (tmp_path / "r.json").exists()


def test_batch_size_probe_stops_at_out_of_memory():
    tried = []

    def fake(bs):
        tried.append(bs)
        if bs > 100:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    assert evaluation.largest_fitting(fake, cap=10_000) == 64 and tried == [8, 16, 32, 64, 128]
    assert evaluation.largest_fitting(fake, cap=20) == 32  # stops once the cap is reached
    assert evaluation.pick_batch_size(nn.Linear(3, 2), (3,), torch.device("cpu"), cap=40) == 40
    assert evaluation.pick_batch_size(nn.Linear(3, 2), (3,), torch.device("cpu"), cap=4000) == 250


def test_eps_parsing():
    assert evaluation.parse_eps("8/255") == (8 / 255, "8/255")
    assert evaluation.parse_eps("0.031") == (0.031, "0.031")
    assert evaluation.parse_eps(4 / 255)[1] == "4/255"
    assert evaluation.parse_eps("2", norm="L2")[0] == 2.0  # L2 radii above 1 are meaningful
    assert [t for _, t in evaluation.parse_eps_list("8/255,0,2/255,2/255")] == ["0", "2/255", "8/255"]
    with pytest.raises(harden.UsageError):
        evaluation.parse_eps("1/0")
