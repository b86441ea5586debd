"""Report cards: `harden evaluate --threats ... --out-card DIR`, resumable per threat, and `harden compare` of two."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from harden.cli import main
from harden.evaluation.report_card import parse_threats, report_card, sweep_text
from tests.test_corruptions import needs_library
from tests.tiny_models import tiny_cnn

TINY = ["tests.tiny_models:tiny_cnn", "--num-classes", "10", "--input-size", "32"]
CHEAP = ["--data", "sample", "-n", "8", "--random-subset", "--attack", "pgd", "--steps", "2", "--corruptions",
         "fog,gaussian_noise", "-q", "--device", "cpu"]
THREATS = ("linf", "l2", "corruptions")


def _card(out: Path, *extra: str):
    return CliRunner().invoke(main, ["evaluate", *TINY, *CHEAP, "--threats", "linf,l2,corruptions",
                                     "--out-card", str(out), *extra])


@pytest.fixture(scope="module")
def card(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cards") / "a"
    res = _card(out)
    assert res.exit_code == 0, res.output
    return out


@needs_library
def test_a_card_holds_every_threat_and_its_pictures(card: Path) -> None:
    data = json.loads((card / "card.json").read_text())
    assert data["format"] == "harden.card/1" and data["model"]["spec"] == "tests.tiny_models:tiny_cnn"
    assert [t["threat"] for t in data["threats"]] == list(THREATS)
    linf, l2, corr = data["threats"]
    assert (linf["norm"], linf["eps_text"], l2["norm"], l2["eps_text"]) == ("Linf", "8/255", "L2", "0.5")
    assert all(t["n"] == 8 and t["seed"] == 0 and len(t["ci95"]) == 2 for t in data["threats"])
    assert corr["corruptions"] == ["gaussian_noise", "fog"] and len(linf["eps_sweep"]) == 4
    page = (card / "card.md").read_text()
    for name in ("linf-sweep.png", "linf-examples.png", "l2-sweep.png", "l2-examples.png",
                 "corruptions-examples.png"):
        assert (card / name).stat().st_size > 0 and f"]({name})" in page
    assert "harden.attacks.pgd" in page
    for name in THREATS:
        assert json.loads((card / f"{name}.json").read_text())["n"] == 8


@needs_library
def test_resume_measures_only_the_missing_threat(card: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    shutil.copytree(card, out)
    (out / "l2.json").unlink()
    for name in ("linf", "corruptions"):
        os.utime(out / f"{name}.json", (1, 1))
    res = _card(out, "--resume")
    assert res.exit_code == 0, res.output
    assert (out / "linf.json").stat().st_mtime == 1 and (out / "corruptions.json").stat().st_mtime == 1
    assert (out / "l2.json").stat().st_mtime > 1
    assert json.loads((out / "l2.json").read_text())["robust_acc"] == \
        json.loads((card / "l2.json").read_text())["robust_acc"]


@needs_library
def test_compare_two_cards_gives_a_line_per_threat(card: Path, tmp_path: Path) -> None:
    other = tmp_path / "b"
    shutil.copytree(card, other)
    res = CliRunner().invoke(main, ["compare", str(card), str(other)])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    for name in THREATS:
        row = next(line for line in lines if line.startswith(name))
        assert "+0.00" in row and "1" in row.split()[-3]  # no difference, p = 1
    assert "not independent" in res.output


class Recorder:
    """A tracker that keeps what it is given."""

    def __init__(self) -> None:
        self.metric: dict[str, float] = {}
        self.artifacts: list[str] = []

    def params(self, values: Any) -> None:
        pass

    def metrics(self, values: Any, step: int | None = None) -> None:
        self.metric.update(values)

    def artifact(self, path: Any) -> None:
        self.artifacts.append(Path(path).name)

    def close(self, failed: bool = False) -> None:
        pass


@needs_library
def test_tracking_names_each_threats_figures(tmp_path: Path) -> None:
    rec = Recorder()
    card = report_card(tiny_cnn(), "sample", "l2:0.25,corruptions", out=tmp_path / "c", n=4, random_subset=True,
                       attack="pgd", steps=1, corruptions="fog", device="cpu", tracker=rec)
    assert [t["threat"] for t in card["threats"]] == ["l2", "corruptions"]
    assert "l2.robust_acc" in rec.metric and "corruptions.mean_acc" in rec.metric and "robust_acc" not in rec.metric
    assert {"card.md", "card.json", "l2.json", "corruptions.json", "l2-sweep.png"} <= set(rec.artifacts)


@pytest.mark.parametrize(("threats", "message"), [
    ("linf,pixels", "unknown threat 'pixels'"),
    ("linf,corruptions:0.1", "corruptions has no eps"),
    ("linf:abc", "eps must be a number"),
])
def test_bad_threats_are_one_line_and_write_nothing(tmp_path: Path, threats: str, message: str) -> None:
    out = tmp_path / "card"
    res = CliRunner().invoke(main, ["evaluate", *TINY, *CHEAP, "--threats", threats, "--out-card", str(out)])
    assert res.exit_code == 2 and message in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert not out.exists()


def test_per_threat_options_are_refused_with_a_card(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["evaluate", *TINY, *CHEAP, "--eps", "4/255", "--out-card", str(tmp_path / "c")])
    assert res.exit_code == 2 and "--eps does not apply with --out-card" in res.output
    assert not (tmp_path / "c").exists()


def test_threats_and_sweeps_are_read() -> None:
    linf, l1 = parse_threats("LINF:4/255, l1")
    assert (linf.norm, linf.eps_text, l1.norm, l1.eps) == ("Linf", "4/255", "L1", 12.0)
    assert sweep_text(linf) == "0,1/255,2/255,4/255" and sweep_text(parse_threats("l2")[0]) == "0,0.125,0.25,0.5"
