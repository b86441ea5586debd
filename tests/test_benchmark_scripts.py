"""benchmarks/meansparse.py (MeanSparse on kept baselines, as it is and with BPDA, paired with the base) and
benchmarks/which_method.py (the README's method table, read from the measured tables), val_attack.py, evaluate.py
and run_evidence_fmnist.sh (the lanes that resume parked checkpoints)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import harden
from tests.helpers import import_benchmark


@pytest.fixture
def meansparse_script():
    return import_benchmark("meansparse")


def test_rule_counts_only_a_gain_in_every_seed(meansparse_script) -> None:
    def seed(diff: float, p: float) -> dict:
        return {"apgd-ce": {"vs_base": {"difference": diff, "p_value": p}}}

    assert meansparse_script.verdict([seed(2.0, 0.01), seed(1.5, 0.03)], "apgd-ce").startswith("MeanSparse is more")
    assert meansparse_script.verdict([seed(2.0, 0.01), seed(-1.5, 0.03)], "apgd-ce").startswith("no difference")
    assert meansparse_script.verdict([seed(2.0, 0.01), seed(1.0, 0.2)], "apgd-ce").startswith("no difference")
    assert meansparse_script.verdict([seed(-2.0, 0.01)], "apgd-ce").startswith("MeanSparse is less")


def test_a_bpda_break_counts_against_the_figure_but_not_as_is(meansparse_script) -> None:
    outcome = ["robust", "bpda:apgd-ce", "apgd-ce", "misclassified"]
    assert meansparse_script._robust(outcome) == [True, False, False, False]
    assert meansparse_script._robust(outcome, as_is=True) == [True, True, False, False]


def test_two_seeds_in_two_pieces_are_measured_paired_and_merged(meansparse_script, tmp_path: Path) -> None:
    reproduce = import_benchmark("reproduce")
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = reproduce.new_model({**reproduce.PROTOCOLS["quick"]})
        path = tmp_path / f"row0-abc-seed{seed}.safetensors"
        harden.save(model, path)
        models.append(path)
    out = tmp_path / "ms.md"
    common = ["--protocol", "quick", "--data", "sample", "--calibrate-n", "32", "--out", str(out)]
    meansparse_script.main([*common, "--models", str(models[0])])
    meansparse_script.main([*common, "--models", str(models[1]), "--merge"])
    elsewhere = [*common[:-1], str(tmp_path / "elsewhere.md")]  # seed 1 again in another place, attack only
    meansparse_script.main([*elsewhere, "--models", str(models[1]), "--no-check"])
    meansparse_script.main([*common, "--join", str(tmp_path / "elsewhere.json")])
    doc = json.loads(out.with_suffix(".json").read_text())
    assert [e["seed"] for e in doc["seeds"]] == [0, 1] and len(doc["pieces"]) == 3
    assert "fgsm" in doc["seeds"][0] and "fgsm" not in doc["seeds"][1]  # the joined seed 1 replaced the older one
    check_table = out.read_text().split("## fgsm")[1].split("as it is:")[0]
    assert "| 0 |" in check_table and "| 1 |" not in check_table  # only the seeds measured with it
    meansparse_script.main([*common, "--models", str(models[1]), "--merge"])
    doc = json.loads(out.with_suffix(".json").read_text())
    for entry in doc["seeds"]:
        run = entry["pgd"]
        base, sparse = run["base"], run["meansparse"]
        assert base["n"] == sparse["n"] == 8 and entry["fgsm"]["meansparse"]["n"] == 4
        assert sparse["operators"] > 0 and "bpda_acc" in sparse and "as_is_acc" in sparse
        assert sparse["robust_acc"] <= min(sparse["as_is_acc"], sparse["bpda_acc"]) + 1e-9
        assert "operators" not in base  # the base has nothing to pass straight through
    text = out.read_text()
    assert "## pgd, n=8" in text and "MeanSparse with BPDA" in text and "Rule, fixed before any result" in text
    with pytest.raises(SystemExit, match="other settings"):
        meansparse_script.main([*common[:-4], "--calibrate-n", "64", "--out", str(out), "--models", str(models[0]),
                                "--merge"])


def test_which_method_table_reads_the_measured_tables_and_pairs_with_fgsm_rs(tmp_path: Path) -> None:
    which = import_benchmark("which_method")
    table = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "evidence-cpu.json"
    records = which.lines_of(table)
    assert [r["method"] for r in records] == ["FGSM-RS", "TRADES (PGD-2 inside)", "TRADES (PGD-2 inside) + AWP 0.005",
                                              "MART (PGD-2 inside)"]
    evidence = {r["index"]: r for r in json.loads(table.read_text())["rows"]}
    for record, index in zip(records[1:], (7, 8, 9)):  # the evidence table's baseline is FGSM-RS: same pairs
        expect = "; ".join(f"s{e['seed']}: {e['vs_baseline']['difference']:+.1f} (p={e['vs_baseline']['p_value']:.2g})"
                           for e in sorted(evidence[index]["seeds"], key=lambda e: e["seed"]))
        assert record["vs_fgsm_rs"] == expect
    assert [r["passes"] for r in records] == [2, 4, 6, 4]
    out = which.main([str(table), "--out", str(tmp_path / "w.md")])
    line = "| MART (PGD-2 inside) | `cpu` (cifar:wrn-16-1) | 8/255 | 3 epochs x 15000 images | 0, 1, 2 |"
    assert line in out.read_text()


def _method_table(path: Path, method: str, robust: list[bool], **settings: object) -> Path:
    s = {"method": method, "steps": 2, "eps": "0.1", "attack": "apgd-ce", "n": len(robust), "eval_seed": 0,
         "epochs": 20, "train_n": None, "model": "m", **settings}
    seed = {"seed": 0, "outcome": ["robust" if r else "apgd-ce" for r in robust], "clean_acc": 90.0,
            "robust_acc": 100 * sum(robust) / len(robust), "train_seconds": 600.0, "epochs_run": 20}
    table = {"protocol": "fmnist", "data": "idx:x", "settings": s,
             "rows": [{"index": 0, "row": method, "transforms": [], "start": "scratch", "seeds": [seed]}]}
    path.write_text(json.dumps(table))
    return path


def test_which_method_pairs_a_table_without_fgsm_rs_on_the_same_test_images_only(tmp_path: Path) -> None:
    which = import_benchmark("which_method")
    n = 100
    fgsm = _method_table(tmp_path / "f.json", "fgsm-rs", [i < 40 for i in range(n)], steps=1)
    pgd = _method_table(tmp_path / "p.json", "pgd", [i < 70 for i in range(n)], step_size=0.05)
    other = _method_table(tmp_path / "o.json", "pgd", [i < 70 for i in range(n)], step_size=0.05, eval_seed=1)
    shared = which.references([json.loads(p.read_text()) for p in (fgsm, pgd, other)])
    [line] = which.lines_of(pgd, shared)
    assert line["method"] == "PGD-2, step 0.5 eps" and line["vs_fgsm_rs"].startswith("s0: +30.0 (p=")
    assert which.lines_of(other, shared)[0]["vs_fgsm_rs"] == "-"  # other test images: no pairing
    assert which.lines_of(pgd)[0]["vs_fgsm_rs"] == "-"


def test_which_method_rewrites_only_the_readme_block_between_its_markers(tmp_path: Path, capsys) -> None:
    which = import_benchmark("which_method")
    fgsm = _method_table(tmp_path / "f.json", "fgsm-rs", [i < 40 for i in range(100)], steps=1)
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{which.BEGIN}\nold table\n{which.END}\nafter\n")
    which.main([str(fgsm), "--out", str(tmp_path / "w.md"), "--readme", str(readme)])
    text = readme.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "old table" not in text
    assert "| FGSM-RS | `fmnist` (0.1) | 1 | 90.0 (1 seed) | 40.0 (1 seed) | 2 | 0.5 | f |" in text
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit) as stop:
        which.main([str(fgsm), "--out", str(tmp_path / "w2.md"), "--readme", str(readme)])
    assert stop.value.code == 2 and "no which-method markers" in capsys.readouterr().err  # a usage mistake
    assert readme.read_text() == "no markers\n" and not (tmp_path / "w2.md").exists()  # nothing written
    with pytest.raises(SystemExit, match="^error: cannot read '.*missing.json' as a table"):
        which.main([str(tmp_path / "missing.json"), "--out", str(tmp_path / "w2.md")])
    with pytest.raises(SystemExit) as stop:
        which.main([str(fgsm), "--out", str(tmp_path / "w2.md"), "--readme", str(tmp_path / "missing.md")])
    assert stop.value.code == 2 and capsys.readouterr().err.startswith("error: --readme: cannot read")


@pytest.mark.slow  # two AutoAttack runs, about 20 s idle
def test_evaluate_benchmark_compares_harden_with_a_direct_autoattack_call_on_the_same_tensors(tmp_path: Path) -> None:
    bench = import_benchmark("evaluate")
    out = bench.main(["--model", "cifar:wrn-16-1", "--n", "8", "--batch-size", "8", "--versions", "fast",
                      "--device", "cpu", "--out", str(tmp_path / "e.json")])
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert row["version"] == "fast" and row["n"] == 8 and row["same_result"] is True  # image by image
    assert row["direct_seconds"] > 0 and row["harden_seconds"] > 0 and result["device"].startswith("cpu")


def test_val_attack_benchmark_sets_both_validation_attacks_side_by_side(tmp_path: Path, monkeypatch) -> None:
    script = import_benchmark("val_attack")
    torch.manual_seed(0)
    model = harden.load_model("cifar:wrn-10-1", num_classes=10, input_size=32, model_kwargs={"base_width": 4})
    harden.save(model, tmp_path / "m.safetensors")
    out = tmp_path / "val.md"
    monkeypatch.setattr("sys.argv", ["val_attack.py", str(tmp_path / "m.safetensors"), "--data", "sample",
                                     "--eps", "0.03", "--val-n", "12", "--out", str(out)])
    script.main()
    row = json.loads(out.with_suffix(".json").read_text())["rows"][0]
    assert row["apgd-ce-25"] <= row["clean"] and row["pgd-10"] <= row["clean"]
    assert row["apgd-ce-25 s"] > 0 and row["pgd-10 s"] > 0
    assert "| m.safetensors |" in out.read_text() and "apgd-ce-25 robust %" in out.read_text()


def test_evidence_lane_resumes_parked_checkpoints_without_overwriting_newer_ones(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "run_evidence_fmnist.sh"
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "fake-python"  # answers the script's table check, records the measuring commands
    fake.write_text(f'#!/bin/sh\nif [ "$1" = "-c" ]; then exec {sys.executable} "$@"; fi\necho "$@" >> {calls}\n')
    fake.chmod(0o755)
    table = tmp_path / "table.json"
    table.write_text(json.dumps({"rows": [{"index": 0, "seeds": [{"seed": 0}]}]}))
    parked, work = tmp_path / "unfinished", tmp_path / "work"
    parked.mkdir()
    (parked / "row1-abc-seed0.ckpt.pt").write_text("parked")
    (parked / "row1-abc-seed1.ckpt.pt").write_text("parked")
    (work / "fmnist").mkdir(parents=True)
    (work / "fmnist" / "row1-abc-seed1.ckpt.pt").write_text("further along")
    env = {**os.environ, "PY": str(fake), "TABLE": str(table), "WORK": str(work), "UNFINISHED": str(parked),
           "ROWS": "0", "COSTLY_ROWS": "1", "SEEDS": "0"}
    out = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, check=True).stdout

    assert (work / "fmnist" / "row1-abc-seed0.ckpt.pt").read_text() == "parked"
    assert (work / "fmnist" / "row1-abc-seed1.ckpt.pt").read_text() == "further along"
    assert "skip row 0 seed 0" in out and "resuming from" in out
    measured = calls.read_text().splitlines()
    assert len(measured) == 1 and "--rows 1 --seeds 0" in measured[0] and f"--work {work}" in measured[0]
