"""Accuracy intervals, the exact McNemar test, and `harden compare` on two real evaluation reports."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import harden
from harden import evaluation
from harden.cli import main
from harden.errors import UsageError
from harden.stats import compare_reports, mcnemar_exact_p, paired_difference, wilson_interval
from tests.helpers import train_on_sample
from tests.tiny_models import tiny_cnn


def test_wilson_interval_known_values() -> None:
    lo, hi = wilson_interval(50, 100)
    assert (round(lo, 2), round(hi, 2)) == (40.38, 59.62)
    assert wilson_interval(0, 16) == (0.0, pytest.approx(100 * 1.959963984540054**2 / (16 + 1.959963984540054**2)))
    lo, hi = wilson_interval(16, 16)
    assert hi == 100.0 and 80 < lo < 81
    lo, hi = wilson_interval(300, 1000)  # about +-2.8 points at n=1000
    assert 27.1 < lo < 27.3 and 32.9 < hi < 33.0
    with pytest.raises(ValueError):
        wilson_interval(5, 4)


def test_exact_mcnemar_is_the_two_sided_binomial_tail() -> None:
    assert mcnemar_exact_p(0, 0) == 1.0 and mcnemar_exact_p(5, 5) == 1.0
    assert mcnemar_exact_p(0, 6) == pytest.approx(2 / 64) == mcnemar_exact_p(6, 0)
    assert mcnemar_exact_p(1, 13) == pytest.approx(2 * 15 / 2**14)
    # the same as summing the binomial probabilities no larger than the observed one
    m, k = 20, 4
    probs = [math.comb(m, i) / 2**m for i in range(m + 1)]
    assert mcnemar_exact_p(k, m - k) == pytest.approx(sum(p for p in probs if p <= probs[k] + 1e-15))


def test_paired_difference_counts_only_the_discordant_images() -> None:
    a = [True, True, False, False, True]
    b = [True, False, True, True, True]
    d = paired_difference(a, b)
    assert (d["only_a"], d["only_b"], d["n"]) == (1, 2, 5)
    assert d["difference"] == pytest.approx(20.0) and d["p_value"] == 1.0


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> tuple[Path, Path]:
    """PGD-2 reports on the same 64 sample images: an untrained tiny CNN (A) and a trained one (B)."""
    out = tmp_path_factory.mktemp("compare")
    torch.manual_seed(0)
    untrained = harden.wrap(tiny_cnn(), input_size=32, name="untrained")
    trained = harden.wrap(tiny_cnn(), input_size=32, name="trained")
    train_on_sample(trained, epochs=5, lr=3e-3)
    paths = out / "a.json", out / "b.json"
    for model, path in zip((untrained, trained), paths):
        evaluation.evaluate(model.eval(), "sample", attack="pgd", steps=2, eps=2 / 255, n=64, random_subset=True,
                            seed=0, device="cpu", report=path, check_examples=0)
    return paths


def test_reports_carry_their_intervals(reports) -> None:
    for path in reports:
        r = json.loads(path.read_text())
        assert r["clean_ci95"][0] <= r["clean_acc"] <= r["clean_ci95"][1]
        assert r["robust_ci95"][0] <= r["robust_acc"] <= r["robust_ci95"][1]
        assert r["clean_ci95"] == [round(v, 3) for v in wilson_interval(r["clean_correct"], 64)]


def test_cli_compare_pairs_two_reports(reports) -> None:
    a, b = (json.loads(p.read_text()) for p in reports)
    res = CliRunner().invoke(main, ["compare", str(reports[0]), str(reports[1]), "--json"], prog_name="harden")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    clean = out["clean"]
    assert clean["acc_a"] == a["clean_acc"] and clean["acc_b"] == b["clean_acc"]
    right_a = [o != "misclassified" for o in a["examples"]["outcome"]]
    right_b = [o != "misclassified" for o in b["examples"]["outcome"]]
    assert clean["only_b"] == sum(rb and not ra for ra, rb in zip(right_a, right_b))
    assert clean["p_value"] == mcnemar_exact_p(clean["only_a"], clean["only_b"])
    assert clean["difference"] > 10 and clean["p_value"] < 0.01  # training beats random init, clearly
    text = CliRunner().invoke(main, ["compare", *map(str, reports)], prog_name="harden").output
    assert "paired on the same 64 images; Linf eps 2/255; attack PGD-2" in text and "exact McNemar" in text


def test_compare_refuses_reports_that_are_not_paired(reports, tmp_path) -> None:
    a, b = (json.loads(p.read_text()) for p in reports)
    other = dict(b, eps=4 / 255, examples=dict(b["examples"], indices=list(reversed(b["examples"]["indices"]))))
    with pytest.raises(UsageError, match="differ in test images, eps"):
        compare_reports(a, other)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    for args, message in ([str(reports[0]), str(bad)], "is not a JSON report"), \
                         ([str(reports[0]), str(tmp_path / "none.json")], "no report at"):
        res = CliRunner().invoke(main, ["compare", *args], prog_name="harden")
        assert res.exit_code == 2 and res.output.strip().startswith("error:") and message in res.output
        assert len(res.output.strip().splitlines()) == 1
    both = tmp_path / "both.report.json"
    both.write_text(json.dumps([a, b]))
    res = CliRunner().invoke(main, ["compare", str(both), str(reports[1])], prog_name="harden")
    assert res.exit_code == 2 and "holds 2 reports (pgd, pgd)" in res.output
    stripped = tmp_path / "stripped.json"
    stripped.write_text(json.dumps({k: v for k, v in a.items() if k != "examples"}))
    res = CliRunner().invoke(main, ["compare", str(stripped), str(reports[1])], prog_name="harden")
    assert res.exit_code == 2 and "no per-example outcomes" in res.output


def test_mcnemar_exact_p_holds_for_thousands_of_discordant_images() -> None:
    # 2.0 ** m overflowed above 1023 discordant pairs (a paired test on 2,000 images where one model fails)
    assert mcnemar_exact_p(1500, 30) < 1e-300
    assert mcnemar_exact_p(1500, 1500) == 1.0
    assert abs(mcnemar_exact_p(600, 500) - mcnemar_exact_p(500, 600)) == 0.0
    assert 0.0 < mcnemar_exact_p(600, 500) < 0.01
