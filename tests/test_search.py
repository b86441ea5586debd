"""harden search: the space, budgets, pruning, resume, sharing a study, outputs and bad input."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from torch import nn

import harden
from harden.cli import main
from harden.data import ImageDataset
from harden.errors import UsageError
from harden.searching.budgets import parse_budget
from harden.searching.outputs import mark_front
from harden.searching.proxies import rank_agreement, spearman, spearman_interval
from harden.searching.space import build_space, parse_dimensions

optuna = pytest.importorskip("optuna")

ROOT = Path(__file__).resolve().parent.parent
SPEC = "tests.tiny_models:tiny_cnn"
SMALL = ["--epochs", "1", "--train-n", "48", "--val-n", "24", "--val-steps", "1", "--method", "fgsm-rs",
         "--batch-size", "24", "--eps-warmup", "0", "--quiet"]


def _cli(*args: str) -> object:
    return CliRunner().invoke(main, list(args), prog_name="harden")


def _trials(storage: str) -> list:
    return optuna.load_study(study_name="harden-search", storage=storage).get_trials()


# ------------------------------------------------------------------------------------------ pieces


def test_budgets_are_multiples_or_amounts_and_never_below_the_base() -> None:
    assert parse_budget("3x", 1000, "macs") == 3000
    assert parse_budget("2G", 1000, "macs") == 2_000_000_000
    assert parse_budget("1.5M", 1000, "params") == 1_500_000
    assert parse_budget(None, 1000, "macs") is None
    with pytest.raises(UsageError, match="below the base model's own 1,000 macs"):
        parse_budget("0.5x", 1000, "macs")
    with pytest.raises(UsageError, match="takes a multiple"):
        parse_budget("lots", 1000, "macs")


def test_spearman_and_its_interval() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks (1, 2, 3, 4, 5) against (2, 1, 4, 3, 5): 1 - 6 * 4 / (5 * 24) = 0.8
    assert spearman([1, 2, 3, 4, 5], [0.2, 0.1, 0.4, 0.3, 0.5]) == pytest.approx(0.8)
    assert spearman([1, 1, 1], [1, 2, 3]) is None
    assert spearman_interval(0.5, 3) is None
    lo, hi = spearman_interval(0.8, 10)
    half = 1.959963984540054 * math.sqrt(1.06 / 7)
    assert (lo, hi) == pytest.approx((math.tanh(math.atanh(0.8) - half), math.tanh(math.atanh(0.8) + half)))
    assert lo < 0.8 < hi
    rows = [{"proxies": {"lipschitz": v}, "robust_acc": a} for v, a in [(3.0, 10.0), (2.0, 20.0), (1.0, 30.0)]]
    entry = rank_agreement(rows, "lipschitz")
    assert entry["spearman"] == pytest.approx(-1.0) and entry["ci95"] is None and "too few" in entry["note"]


def test_pareto_front_keeps_only_undominated_candidates() -> None:
    rows = [{"robust_acc": a, "macs": m} for a, m in [(10, 100), (20, 300), (15, 300), (20, 200), (5, 50)]]
    mark_front(rows)
    assert [r["pareto"] for r in rows] == [True, False, False, True, True]


def test_space_is_read_off_the_model() -> None:
    model = harden.load_model(SPEC, num_classes=10, input_size=32)
    space = build_space(model, "strides,activation,upsample", extra=["activation:name=mish"])
    dims = {d.name: d.choices for d in space.dimensions}
    assert dims["strides"] == ("keep", "12", "21", "11")  # tiny_cnn downsamples twice by 2
    assert dims["activation"][0] == "keep" and "silu" in dims["activation"]
    assert space.transforms(space.identity()) == []
    params = {"strides": "12", "activation": "silu", "upsample": "2:bilinear", "transform-0": "activation:name=mish"}
    assert space.transforms(params) == ["strides:pattern=12", "activation:name=silu",
                                        "upsample:factor=2,mode=bilinear", "activation:name=mish"]
    assert space.size() == 4 * 4 * 3 * 2
    with pytest.raises(UsageError, match="unknown search dimension 'upsampel'; did you mean: upsample"):
        parse_dimensions("upsampel")


# --------------------------------------------------------------------------------- the whole search


@pytest.mark.slow
def test_search_writes_everything_never_trains_over_budget_and_resumes(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import harden.training as training

    trained: list[int] = []
    real = training.finetune

    def spy(model, data, config=None, **kw):
        trained.append(harden.summary.count_macs(model, model.input_size))
        return real(model, data, config, **kw)

    monkeypatch.setattr(training, "finetune", spy)
    out = tmp_path / "s"
    common = [SPEC, "--num-classes", "10", "--input-size", "32", "--data", "sample", "--out", str(out),
              "--space", "activation,upsample", "--budget-macs", "3x", "--pruner", "none", *SMALL]
    result = _cli("search", *common, "--trials", "2")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "pareto.json").read_text())
    base_macs = report["base"]["macs"]
    budget = 3 * base_macs
    assert report["study"]["budgets"]["macs"] == budget
    assert len(trained) == 2 and all(m <= budget for m in trained)
    rows = report["candidates"]
    assert len(rows) == 2 and rows[0]["transforms"] == []  # the base model is always the first trial
    for r in rows:
        assert r["macs"] <= budget and r["n"] == 24 and r["clean_ci95"][0] <= r["clean_acc"] <= r["clean_ci95"][1]
        assert r["robust_ci95"][0] <= r["robust_acc"] <= r["robust_ci95"][1]
    for s in report["not_measured"]:  # upsampling by 2 costs 4x: rejected before any training
        assert s["status"] in ("rejected", "duplicate")
        if s["status"] == "rejected":
            assert s["macs"] > budget and s["epochs_run"] == 0 and "over budget" in s["reason"]
    assert report["attack"]["name"] == "pgd-1" and report["attack"]["n"] == 24
    assert any(r["pareto"] for r in rows)
    assert [p["proxy"] for p in report["proxies"]] == ["feature_map", "lipschitz"]
    assert all(r["feature_map"] == [8, 8] and r["proxies"]["feature_map"] == 64 for r in rows)
    assert all(0 < r["proxies"]["lipschitz"] < math.inf for r in rows)
    assert report["proxies"] == [json.loads(json.dumps(rank_agreement(rows, p))) for p in ("feature_map", "lipschitz")]
    assert "proxies (rank agreement" in result.output and "robust % (95% interval)" in result.output
    assert (out / "pareto.png").stat().st_size > 1000
    best = yaml.safe_load((out / "best.yaml").read_text())
    best_row = max(rows, key=lambda r: (r["robust_acc"], -r["macs"], -r["trial"]))
    assert best["transforms"] == best_row["transforms"] and "train_n" not in best["finetune"]
    check = _cli("run", str(out / "best.yaml"), "--check")
    assert check.exit_code == 0, check.output

    first = {t.number: (t.value, t.user_attrs.get("status")) for t in _trials(f"sqlite:///{out / 'study.db'}")}
    again = _cli("search", *common, "--trials", "2")  # without --resume: refused, nothing changes
    assert again.exit_code == 2 and again.output.startswith("error: ") and "--resume" in again.output
    trained.clear()
    resumed = _cli("search", *common, "--trials", "3", "--resume")
    assert resumed.exit_code == 0, resumed.output
    after = _trials(f"sqlite:///{out / 'study.db'}")
    assert {t.number: (t.value, t.user_attrs.get("status")) for t in after if t.number in first} == first
    assert len(trained) == 1  # only the new trial was trained
    assert len(json.loads((out / "pareto.json").read_text())["candidates"]) == 3


def _two_class_data(n: int = 128) -> ImageDataset:
    """Dark images are class 0, bright ones class 1: a tiny CNN separates them robustly within an epoch."""
    gen = torch.Generator().manual_seed(0)
    labels = [i % 2 for i in range(n)]
    items = [(0.25 + 0.5 * y + 0.05 * torch.rand(3, 32, 32, generator=gen)).clamp(0, 1) for y in labels]
    return ImageDataset("two-class", "train", ["dark", "bright"], items, lambda t: t, labels)


class _Blind(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0


class Blindfold(harden.Transform):
    """A hopeless candidate: the network never sees the image."""

    name = "blindfold"
    summary = "replace the input by zeros (tests only)"

    def apply(self, model):
        model.input_transforms.append(_Blind())
        return harden.Applied(["input replaced by zeros"])


@pytest.mark.parametrize("name", ["halving", "median", "hyperband"])
def test_no_trial_is_pruned_on_the_eps_warm_up_epochs(name: str) -> None:
    import optuna

    from harden.searching.pruners import first_rung, make_pruner

    assert [first_rung(w) for w in (0, 0.5, 1, 2)] == [1, 2, 2, 3]
    for warmup, judged_at in ((1.0, 2), (0.0, 1)):
        study = optuna.create_study(direction="maximize", pruner=make_pruner(name, 4, warmup),
                                    sampler=optuna.samplers.RandomSampler(seed=0))
        for score in (90.0, 85.0):  # two good trials run to the end
            good = study.ask()
            for step in range(1, 5):
                good.report(score, step)
                good.should_prune()  # a trial's rung is recorded when it asks; these run to the end regardless
            study.tell(good, score)
        hopeless = study.ask()
        verdicts = []
        for step in range(1, 5):
            hopeless.report(1.0, step)
            verdicts.append(hopeless.should_prune())
        assert not any(verdicts[:judged_at - 1]), (name, warmup, verdicts)
        if name != "hyperband":  # (hyperband's brackets start at later rungs too)
            assert verdicts[judged_at - 1], (name, warmup, verdicts)


@pytest.mark.slow
def test_pruning_stops_a_hopeless_trial(tmp_path: Path, scoped_transforms: None) -> None:
    harden.register_transform(Blindfold)  # undone after the test
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 2))
    model = harden.wrap(net, input_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    result = harden.search(model, _two_class_data(), out=tmp_path / "p", space="none", extra=["blindfold"],
                           trials=2, epochs=2, val_n=32, val_steps=1, method="fgsm-rs", batch_size=16, lr=0.2,
                           eps_warmup=0, pruner="halving")
    [base] = result.rows
    assert base["transforms"] == [] and base["epochs_run"] == 2 and base["history"][0]["val_robust"] >= 90
    [blind] = [s for s in result.skipped if s["transforms"] == ["blindfold"]]
    assert blind["status"] == "pruned" and blind["epochs_run"] == 1 and "after epoch 1" in blind["reason"]
    assert float(blind["reason"].split("robust ")[1].rstrip("%")) <= 75  # a constant prediction on two classes
    stored = json.loads((tmp_path / "p" / "pareto.json").read_text())
    assert [s["status"] for s in stored["not_measured"] if s["transforms"] == ["blindfold"]] == ["pruned"]
    assert stored["proxies"][0]["note"].startswith("1 measured candidate")


def test_a_storage_another_process_is_creating_is_retried_a_bad_one_is_not(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from harden.searching import storage

    calls: list[str] = []

    def flaky(url: str) -> str:
        calls.append(url)
        if len(calls) < 3:  # what the losers of a concurrent first open see
            raise RuntimeError("(sqlite3.OperationalError) table studies already exists" if len(calls) == 1 else
                               "(sqlite3.IntegrityError) UNIQUE constraint failed: alembic_version.version_num")
        return "storage"

    monkeypatch.setattr(storage, "_rdb_storage", flaky)
    monkeypatch.setattr(storage.time, "sleep", lambda s: None)
    assert storage.open_storage("sqlite:///x.db") == "storage" and len(calls) == 3

    def no_driver(url: str) -> str:
        calls.append(url)
        raise RuntimeError("Can't load plugin: sqlalchemy.dialects:nosuchdb")

    calls.clear()
    monkeypatch.setattr(storage, "_rdb_storage", no_driver)
    with pytest.raises(UsageError, match="cannot open the study storage .*nosuchdb"):
        storage.open_storage("nosuchdb://x")
    assert len(calls) == 1  # the user's mistake is reported at once, not retried


def test_places_go_to_the_lowest_trial_numbers_and_a_deciding_trial_holds_none(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from harden.searching import claims

    monkeypatch.setattr(claims, "CLAIM_WAIT_S", 0.5)  # how long a trial of a dead process is waited on
    study = optuna.create_study(direction="maximize")
    for _ in range(2):
        done = study.ask()
        done.set_user_attr("status", "measured")
        study.tell(done, 1.0)
    other, mine = study.ask(), study.ask()  # another process's trial (lower number), then this one's
    other.set_user_attr("status", claims.DECIDING)
    # the other trial is still deciding: it holds no place, so neither process may stop for it
    assert claims.counted(study) == 2
    assert claims.claim_place(mine, 3)  # it never decides (its process died): the wait ends, the place is free
    assert claims.counted(study) == 3 and mine.user_attrs["status"] == "training"

    later = study.ask()
    later.set_user_attr("status", claims.DECIDING)
    last = study.ask()
    claimed = threading.Timer(0.2, lambda: later.set_user_attr("status", "training"))
    claimed.start()  # the lower-numbered trial claims while this one waits for it
    assert not claims.claim_place(last, 4)  # 2 done + 2 lower claims: the last place is taken
    claimed.join()


_OPEN_AT_ONCE = """
import pathlib, sys, time
from harden.searching.storage import open_storage
here, me, n = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
(here / f"ready{me}").touch()
while len(list(here.glob("ready*"))) < n:  # a barrier: all imports done, then all open at once
    time.sleep(0.001)
open_storage(f"sqlite:///{here / 'fresh.db'}")
"""


@pytest.mark.slow
def test_processes_opening_one_new_storage_at_once_all_succeed(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for round_ in range(3):  # before the retry, 4 processes failed in most rounds
        here = tmp_path / str(round_)
        here.mkdir()
        procs = [subprocess.Popen([sys.executable, "-c", _OPEN_AT_ONCE, str(here), str(i), "4"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(4)]
        outputs = [p.communicate(timeout=300)[0] for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, outputs


@pytest.mark.slow
def test_two_processes_share_one_study_without_duplicates(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HARDEN_PROGRESS": "0"}
    args = [sys.executable, "-m", "harden.cli", "search", SPEC, "--num-classes", "10", "--input-size", "32",
            "--data", "sample", "--space", "activation", "--pruner", "none", "--storage", storage, "--trials", "3",
            *SMALL]
    procs = [subprocess.Popen([*args, "--out", str(tmp_path / f"out{i}")], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    trials = _trials(storage)
    trained = [t for t in trials if t.user_attrs.get("status") == "measured"]
    assert len(trained) == 3
    assert len({tuple(t.user_attrs["transforms"]) for t in trained}) == 3  # no candidate trained twice
    assert all("trial" in o for o in outputs)


@pytest.mark.parametrize(("extra", "message"), [
    (["--budget-macs", "0.5x"], "below the base model's own"),
    (["--budget-params", "10"], "below the base model's own"),
    (["--trials", "0"], "--trials must be at least 1"),
    (["--storage", "nosuchdb://x"], "cannot open the study storage"),
    (["--storage", "sqlite:////nonexistent-dir/x/study.db"], "cannot open the study storage"),
    (["--resume"], "nothing to resume"),
    (["--space", "upsampel"], "unknown search dimension"),
    (["--val-n", "0"], "--val-n must be positive"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path: Path, extra: list[str], message: str) -> None:
    out = tmp_path / "never"
    result = _cli("search", SPEC, "--num-classes", "10", "--input-size", "32", "--data", "sample", "--out", str(out),
                  *extra)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert not out.exists()


@pytest.mark.slow
def test_a_finished_trial_is_measured_not_pruned(tmp_path: Path, scoped_transforms: None) -> None:
    harden.register_transform(Blindfold)  # undone after the test
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 2))
    model = harden.wrap(net, input_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    result = harden.search(model, _two_class_data(), space="none", extra=["blindfold"],
                           storage=f"sqlite:///{tmp_path}/s.db", trials=2, epochs=1, val_n=32, val_steps=1,
                           method="fgsm-rs", batch_size=16, lr=0.2,
                           eps_warmup=0, pruner="halving")
    assert sorted(r["transforms"] for r in result.rows) == [[], ["blindfold"]]  # worse, but finished: kept
    assert result.best["transforms"] == [] and result.files == {}


# --------------------------------------------------------------------------------- the noise-aware verdict


def test_the_verdict_names_a_winner_only_when_both_measurements_pass_the_rule() -> None:
    from harden.schemas.search import make_search_config
    from harden.searching import verdict as v

    with pytest.raises(UsageError, match="--confirm must be 0 or more"):
        make_search_config(out="x", confirm=-1)

    base = "1" * 40 + "0" * 60
    better = "1" * 40 + "1" * 25 + "0" * 35  # 25 more robust images, none fewer: p ~ 6e-8
    slightly = "1" * 40 + "1" * 3 + "0" * 57  # 3 more: p = 0.25
    strong, weak = v.compare(base, better), v.compare(base, slightly)
    assert strong["difference"] == 25.0 and strong["p_value"] < 1e-6 and strong["ci95"][0] > 15
    assert weak["p_value"] > 0.05 and weak["ci95"][0] < 0 < weak["ci95"][1]
    rows = [{"trial": 1, "transforms": ["a"], "vs_base": strong, "confirmation": strong},
            {"trial": 2, "transforms": ["b"], "vs_base": strong, "confirmation": weak}]
    assert v.decide(rows) == {"verdict": "winner", "trial": 1, "transforms": ["a"], "rule": v.RULE,
                              "candidates": [1, 2]}
    assert v.decide(rows[1:])["verdict"] == "keep the base"  # the second seed did not confirm it
    lo, hi = v.paired_interval(0, 0, 50)
    assert lo == hi == 0.0


def test_two_identical_candidates_give_no_winner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 2))
    model = harden.wrap(net, input_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    lines: list[str] = []  # upsample x1 changes nothing: the candidate is the base itself
    result = harden.search(model, _two_class_data(96), out=tmp_path / "p", space="none", extra=["upsample:factor=1"],
                           trials=2, epochs=1, val_n=24, val_steps=1, method="fgsm-rs", batch_size=16, lr=0.05,
                           eps="16/255", eps_warmup=0, pruner="none", confirm=1, echo=lines.append)
    assert sorted(r["transforms"] for r in result.rows) == [[], ["upsample:factor=1"]]
    same = next(r for r in result.rows if r["transforms"])
    assert same["vs_base"]["difference"] == 0.0 and same["vs_base"]["p_value"] == 1.0
    assert result.verdict["verdict"] == "keep the base" and result.best["transforms"] == []
    assert any(line.startswith("verdict: keep the base") for line in lines)
    stored = json.loads((tmp_path / "p" / "pareto.json").read_text())
    assert stored["verdict"]["verdict"] == "keep the base" and stored["best_trial"] == 0
    assert "transforms: []" in (tmp_path / "p" / "best.yaml").read_text()


def test_resuming_a_search_with_other_settings_is_one_line(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 2))
    model = harden.wrap(net, input_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    opts = dict(out=tmp_path / "p", space="none", extra=["upsample:factor=1"], trials=1, epochs=1, val_n=16,
                val_steps=1, method="fgsm-rs", batch_size=16, lr=0.05, eps_warmup=0, pruner="none", confirm=0)
    harden.search(model, _two_class_data(48), **opts)
    with pytest.raises(UsageError) as info:
        harden.search(model, _two_class_data(48), resume=True, **{**opts, "epochs": 2, "lr": 0.1})
    message = str(info.value)
    assert "is a search with other settings (they differ at finetune.epochs, finetune.lr)" in message
    assert "\n" not in message


def test_a_method_unfit_for_a_search_is_refused_in_one_line(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 2))
    model = harden.wrap(net, input_size=8)
    with pytest.raises(UsageError, match="--method clean is not offered for a search.*pgd"):
        harden.search(model, "sample", out=tmp_path / "s", method="clean")
    assert not (tmp_path / "s").exists()


def test_best_recipe_of_a_harden_file_rebuilds_a_grayscale_non_square_model() -> None:
    from harden.schemas.model import ModelSpec
    from harden.searching.driver import _model_block

    model = harden.load_model("cifar:wrn-10-1", num_classes=3, input_size="1x28x24",
                              model_kwargs={"base_width": 4, "in_chans": 1})
    block = _model_block(model, None)
    assert block["input_size"] == "1x28x24" and block["kwargs"] == {"base_width": 4, "in_chans": 1}
    again = ModelSpec.of(block).build(trust_code=False)
    assert again.input_size == (1, 28, 24)
    assert [p.shape for p in again.parameters()] == [p.shape for p in model.parameters()]
    square = _model_block(harden.load_model("cifar:wrn-10-1", num_classes=10, input_size=32), None)
    assert square["input_size"] == 32 and "kwargs" not in square


def test_the_search_ranks_by_the_validation_attack_it_is_given() -> None:
    from harden.searching.objective import robust_outcome
    from tests.test_finetune import _linear_margin_case

    model, x, y = _linear_margin_case()
    x = x.float() / 255  # the search's held-out images are floats in [0, 1]
    options = {"eps": 0.2, "norm": "Linf", "seed": 0, "val_steps": 1}
    assert robust_outcome(model, (x, y), {**options, "val_attack": "pgd"}, "cpu") == "1" * 16
    assert robust_outcome(model, (x, y), {**options, "val_attack": "apgd-ce", "val_steps": 5}, "cpu") == "0" * 16


def test_a_pgd_ranked_space_of_activations_says_pgd_flatters_them() -> None:
    from harden.searching.driver import ranking_note
    from harden.searching.space import build_space
    from harden.training import make_config

    model = harden.load_model(SPEC, num_classes=10, input_size=32)
    with_activations, without = build_space(model, "activation"), build_space(model, "upsample")
    assert "--val-attack apgd-ce" in ranking_note(make_config(), with_activations)
    assert ranking_note(make_config(val_attack="apgd-ce"), with_activations) is None
    assert ranking_note(make_config(), without) is None
