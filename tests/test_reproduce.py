"""benchmarks/reproduce.py: protocols, seeds, pieces merged into one evidence table, paired tests per seed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from harden.stats import paired_difference
from tests.helpers import import_benchmark


def _reproduce(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "benchmarks/reproduce.py", "--quick", "--data", "sample", "--work", str(tmp_path / "work"),
         "--out", str(tmp_path / "table.md"), *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_quick_protocol_builds_the_table_in_pieces_of_rows_and_seeds(tmp_path: Path) -> None:
    for args in (["--rows", "0,5", "--seeds", "0"], ["--rows", "6", "--seeds", "0", "--merge"],
                 ["--rows", "0,5", "--seeds", "1", "--merge"], ["--rows", "8", "--seeds", "0", "--merge"]):
        res = _reproduce(tmp_path, *args)
        assert res.returncode == 0, res.stderr[-2000:]
    table = json.loads((tmp_path / "table.json").read_text())
    assert [p["command"].split("--out")[1].split(" ", 2)[-1] for p in table["pieces"]] == [
        "--rows 0,5 --seeds 0", "--rows 6 --seeds 0 --merge", "--rows 0,5 --seeds 1 --merge",
        "--rows 8 --seeds 0 --merge"]
    rows = {r["index"]: r for r in table["rows"]}
    assert rows[8]["training"]["method"] == "trades" and rows[8]["training"]["awp"] == 0.005
    assert sorted(rows) == [0, 5, 6, 8] and [e["seed"] for e in rows[0]["seeds"]] == [0, 1]
    assert [e["seed"] for e in rows[6]["seeds"]] == [0]
    for entry in rows[5]["seeds"]:  # each seed paired with the baseline of the same seed
        base = next(e for e in rows[0]["seeds"] if e["seed"] == entry["seed"])
        expect = paired_difference([o == "robust" for o in base["outcome"]], [o == "robust" for o in entry["outcome"]])
        assert entry["vs_baseline"]["p_value"] == expect["p_value"] and entry["vs_baseline"]["row"] == 0
        assert entry["n"] == 8 and entry["attack"] == "pgd" and entry["eps"] == "8/255"
    assert rows[6]["seeds"][0]["vs_reference"]["row"] == 5  # the pitch row against fine-tuning as it is
    assert "check" in rows[0]["seeds"][0] and "check" not in rows[0]["seeds"][1]  # first seed only
    assert rows[0]["seeds"][0]["check"]["n"] == 4 and rows[0]["seeds"][0]["check"]["attack"] == "fgsm"
    assert len(list((tmp_path / "work" / "quick").glob("pretrain-*-seed0.safetensors"))) == 1  # shared by 5 and 6
    text = (tmp_path / "table.md").read_text()
    assert "robust % (PGD-10, Linf 8/255, n=8), mean ± sd" in text and "(FGSM, Linf 8/255, n=4)" in text
    assert "row 8: TRADES with a 2-step PGD inside (step 2.5 eps / 2), beta 6.0, awp 0.005" in text
    assert "exact McNemar p" in text and "| 0 | baseline | scratch | 0, 1 |" in text
    assert "## What the table shows, row by row" in text and "(1 of the protocol's 2 seeds measured so far)" in text
    assert all(0 <= e["robust_acc"] <= e["clean_acc"] <= 100 for r in rows.values() for e in r["seeds"])


@pytest.mark.slow
def test_merge_refuses_a_table_measured_with_other_settings(tmp_path: Path) -> None:
    (tmp_path / "table.json").write_text(json.dumps({"protocol": "quick", "model": "cifar:wrn-16-1", "data": "sample",
                                                     "settings": {}, "device": "elsewhere", "rows": []}))
    res = _reproduce(tmp_path, "--rows", "0", "--merge")
    assert res.returncode == 1 and res.stderr.strip().splitlines()[-1].startswith(
        f"error: --merge: '{tmp_path / 'table.json'}' was measured with other settings, device, row_definitions;")
    res = _reproduce(tmp_path, "--rows", "10")
    assert res.returncode == 2 and "error: --rows takes numbers from 0 to 9" in res.stderr
    res = _reproduce(tmp_path, "--seeds", "a")
    assert res.returncode == 2 and "error: --seeds takes numbers" in res.stderr
    res = _reproduce(tmp_path, "--model", "cifar:no-such-net", "--rows", "0")
    assert res.returncode == 2 and res.stderr.startswith("error: ") and "Traceback" not in res.stderr


def _fresh(index: int, seed: int, robust: list[bool]) -> dict:
    outcome = ["robust" if r else "pgd-10" for r in robust]
    acc = 100 * sum(robust) / len(robust)
    return {"index": index, "row": f"row {index}", "transforms": [], "start": "scratch", "params": 10, "macs": 20,
            "feature_map": "8x8", "seed_result": {"seed": seed, "attack": "pgd", "n": len(robust), "eps": "8/255",
                                                  "clean_acc": 100.0, "robust_acc": acc, "outcome": outcome,
                                                  "train_seconds": 60.0}}


def test_merging_replaces_a_rerun_seed_and_pairs_seeds_with_the_same_baseline_seed() -> None:
    table = import_benchmark("evidence_table")
    n = 60
    base = [i < 20 for i in range(n)]
    better = [i < 40 for i in range(n)]  # 20 more robust images, none fewer: p ~ 2e-6
    first = table.merge_results(None, {"protocol": "t"}, {"command": "a"}, [_fresh(0, 0, base), _fresh(1, 0, base)],
                                {})
    assert first["rows"][1]["seeds"][0]["vs_baseline"]["p_value"] == 1.0
    second = table.merge_results(first, {"protocol": "t"}, {"command": "b"}, [_fresh(1, 0, better)], {})
    entry = second["rows"][1]["seeds"]
    assert len(entry) == 1 and entry[0]["piece"] == 1 and entry[0]["robust_acc"] == pytest.approx(200 / 3)
    assert entry[0]["vs_baseline"]["difference"] == pytest.approx(100 / 3, abs=0.01)
    assert entry[0]["vs_baseline"]["p_value"] < 1e-5 and [p["command"] for p in second["pieces"]] == ["a", "b"]


def test_the_picture_pairs_each_seed_with_the_baseline_of_the_same_seed(tmp_path: Path) -> None:
    table, plot = import_benchmark("evidence_table"), import_benchmark("evidence_plot")
    n = 60
    base, better = [i < 20 for i in range(n)], [i < 40 for i in range(n)]
    merged = table.merge_results(None, {"protocol": "t", "model": "m"}, {"command": "a"},
                                 [_fresh(0, 0, base), _fresh(0, 1, better), _fresh(1, 0, better), _fresh(1, 1, better),
                                  _fresh(2, 1, base)], {})
    rows = {r["index"]: r for r in merged["rows"]}
    (up, level) = plot._differences(merged, rows[1])
    assert up[0] == pytest.approx(100 / 3, abs=0.01) and up[1] == 0.0 and up[2] < 1e-5  # seed 0: 20 more images
    assert level == (0.0, 0.0, 1.0)  # seed 1 against seed 1's baseline, not seed 0's
    assert plot._differences(merged, rows[2])[0][0] == pytest.approx(-100 / 3, abs=0.01)
    png = plot.plot_table(merged, tmp_path / "t.png", "PGD-10, Linf 8/255, n=60", alpha=0.05)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_verdicts_say_plainly_when_a_row_shows_nothing() -> None:
    table = import_benchmark("evidence_table")
    null = [{"vs_baseline": {"difference": d, "p_value": p}} for d, p in ((1.0, 0.4), (-0.5, 0.8), (0.2, 0.9))]
    assert table.verdict(null, "vs_baseline", "the baseline").startswith(
        "no significant difference in robust accuracy from the baseline (p >= 0.05 in all 3 seeds; mean")
    down = [{"vs_baseline": {"difference": -d, "p_value": 0.3}} for d in (0.7, 1.8, 1.0)]
    assert "(p >= 0.05 in all 3 seeds, lower in all 3; mean difference -1.2 points)" in table.verdict(
        down, "vs_baseline", "the baseline")
    up = [{"vs_baseline": {"difference": d, "p_value": 0.001}} for d in (3.0, 4.0, 5.0)]
    assert table.verdict(up, "vs_baseline", "the baseline").startswith("robust accuracy higher than the baseline in "
                                                                       "every seed measured (3 of 3")
    mixed = up[:2] + null[1:2]
    assert table.verdict(mixed, "vs_baseline", "the baseline").startswith("mixed: p < 0.05 in 2 of 3 seeds")
    same_way = up[:2] + null[:1]  # all three higher, one not significant: a direction, not a difference
    assert table.verdict(same_way, "vs_baseline", "the baseline").startswith(
        "higher than the baseline in all 3 seeds (differences +3.0, +4.0, +1.0) but p < 0.05 in only 2 of 3")
    counts = [{"vs_baseline": {"difference": -1.2, "p_value": 0.3, "only_a": a, "only_b": b, "n": 500}}
              for a, b in ((14, 8), (13, 7))]  # 27 against 15 discordant images over both seeds
    pooled = table.pooled(counts, "vs_baseline")
    assert pooled["seeds"] == 2 and pooled["difference"] == pytest.approx(-1.2)
    assert pooled["p_value"] == pytest.approx(paired_difference([True] * 27 + [False] * 15,
                                                                [False] * 27 + [True] * 15)["p_value"])
    assert table.pooled(counts[:1], "vs_baseline") is None  # one seed: nothing to pool
    assert table.mean_sd([30.0, 32.0, 34.0]) == "32.0 ± 2.0" and table.mean_sd([30.0]) == "30.0 (1 seed)"


def test_the_cpu_protocol_is_fixed_and_measures_what_the_issue_asks() -> None:
    protocols = import_benchmark("protocols")
    cpu = protocols.PROTOCOLS["cpu"]
    assert len(protocols.ROWS) >= 7 and len(cpu["seeds"]) >= 3 and cpu["n"] >= 1000
    assert cpu["attack"] == "apgd-ce" and cpu["check_attack"].startswith("autoattack") and cpu["eps"] == "8/255"
    assert [r.start for r in protocols.ROWS].count("pretrained") == 2 and protocols.REFERENCE == {6: 5, 8: 7, 9: 7}
    methods = {r.training.get("method", cpu["method"]) for r in protocols.ROWS}
    assert methods == {"fgsm-rs", "trades", "mart"}  # the fine-tuning methods' rows (TRADES, TRADES+AWP, MART)
    awp = [r for r in protocols.ROWS if r.training.get("awp")]
    assert len(awp) == 1 and awp[0].training == {**protocols.ROWS[protocols.REFERENCE[8]].training,
                                                 "awp": 0.005, "awp_warmup": 0}  # only AWP differs from TRADES


def test_the_searched_row_belongs_to_its_protocol_and_model_and_fits_the_search_budget() -> None:
    import harden
    from harden.summary import model_facts

    protocols = import_benchmark("protocols")
    cpu = protocols.rows_of("cpu", "cifar:wrn-16-1")
    assert cpu[:len(protocols.ROWS)] == protocols.ROWS and len(cpu) == len(protocols.ROWS) + 1
    assert protocols.rows_of("gpu", "cifar:resnet18") == protocols.rows_of("quick", "cifar:wrn-16-1") == protocols.ROWS
    assert protocols.rows_of("cpu", "cifar:wrn-16-4") == protocols.ROWS  # another --model: its transforms may not fit
    base = harden.load_model("cifar:wrn-16-1", num_classes=10, input_size=32)
    found = model_facts(harden.apply(base, cpu[-1].transforms))
    assert found.macs <= 4 * model_facts(base).macs and found.feature_map_text() == "16x16"


def test_rows_added_at_the_end_still_merge_with_an_older_table() -> None:
    reproduce = import_benchmark("reproduce")
    identity = {"protocol": "cpu", "settings": {"a": 1}, "row_definitions": [r.definition() for r in reproduce.ROWS]}
    older = {**identity, "row_definitions": identity["row_definitions"][:7]}
    assert reproduce.mismatched(older, identity) == []
    assert older["row_definitions"][0] == ["baseline", [], "scratch"]  # rows without training changes as before
    changed = {**older, "row_definitions": [["other", [], "scratch"]] + older["row_definitions"][1:]}
    assert reproduce.mismatched(changed, identity) == ["row_definitions"]
    assert reproduce.mismatched({**identity, "settings": {"a": 2}}, identity) == ["settings"]


def _piece(reproduce, when: str, results: list[tuple[int, int, list[str]]]) -> tuple[dict, list[dict]]:
    """A piece measured at ``when`` with (row, seed, outcomes) results, as reproduce.py records them."""
    piece = {"command": f"python benchmarks/reproduce.py --quick --rows {results[0][0]}", "date": when,
            "device": reproduce.device_name(), "rows": [r[0] for r in results], "seeds": [r[1] for r in results]}
    fresh = [{"index": i, "row": reproduce.ROWS[i].label, "transforms": reproduce.ROWS[i].transforms,
              "start": reproduce.ROWS[i].start, "params": 1000, "macs": 10**6, "feature_map": "8x8", "seed_result": {
                  "seed": seed, "attack": "pgd", "attacks": ["pgd"], "eps": "8/255", "n": len(outcome),
                  "outcome": outcome, "clean_acc": 100.0, "robust_acc": 100 * outcome.count("robust") / len(outcome),
                  "warnings": [], "seconds": 1.0, "pretrain_seconds": 0.0, "train_seconds": 60.0}}
             for i, seed, outcome in results]
    return piece, fresh


def test_tables_measured_in_two_clones_join_and_pair_across_them(tmp_path: Path) -> None:
    reproduce = import_benchmark("reproduce")
    table = import_benchmark("evidence_table")
    identity = {"protocol": "quick", "model": "cifar:wrn-16-1", "data": "sample",
                "settings": {**reproduce.PROTOCOLS["quick"], "steps_eval": 10}, "device": reproduce.device_name(),
                "row_definitions": [r.definition() for r in reproduce.ROWS]}
    base_piece = _piece(reproduce, "d0", [(0, 0, ["robust"] * 30 + ["pgd"] * 10)])
    here = table.merge_results(None, identity, *base_piece, reproduce.reference_of("quick"))
    there = table.merge_results(here, identity, *_piece(reproduce, "d1", [(3, 0, ["robust"] * 10 + ["pgd"] * 30)]),
                                reproduce.reference_of("quick"))
    joined, added = table.join_tables(here, there, identity, reproduce.reference_of("quick"))
    assert added == 1 and [p["date"] for p in joined["pieces"]] == ["d0", "d1"]
    row3 = next(r for r in joined["rows"] if r["index"] == 3)["seeds"][0]
    assert row3["piece"] == 1 and row3["vs_baseline"]["difference"] == -50.0 and row3["vs_baseline"]["p_value"] < 1e-5
    assert table.join_tables(joined, there, identity, reproduce.reference_of("quick"))[1] == 0  # nothing twice

    out = tmp_path / "t.md"
    (tmp_path / "there.json").write_text(json.dumps(there))
    # the device string carries the thread count: the script must see this process's (conftest sets it)
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    res = subprocess.run([sys.executable, "benchmarks/reproduce.py", "--quick", "--data", "sample", "--out", str(out),
                          "--join", str(tmp_path / "there.json")], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    assert "2 piece(s) added" in res.stdout and len(json.loads(out.with_suffix(".json").read_text())["rows"]) == 2
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "](t.png)" in out.read_text()
    (tmp_path / "other.json").write_text(json.dumps({**there, "device": "another machine"}))
    res = subprocess.run([sys.executable, "benchmarks/reproduce.py", "--quick", "--data", "sample", "--out", str(out),
                          "--join", str(tmp_path / "other.json")], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 1 and res.stderr.strip().splitlines() == [
        f"error: --join: '{tmp_path / 'other.json'}' was measured with other device"]
    res = subprocess.run([sys.executable, "benchmarks/reproduce.py", "--quick", "--data", "sample", "--out", str(out),
                          "--join", str(tmp_path / "missing.json")], capture_output=True, text=True, timeout=120,
                         env=env)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "cannot read" in res.stderr


def test_training_cost_counts_the_passes_of_each_method() -> None:
    reproduce = import_benchmark("reproduce")
    s = {"method": "fgsm-rs", "steps": 1}
    costs = {r.label.split(" (")[0]: r.training_cost(s) for r in reproduce.ROWS}
    assert costs["baseline"] == 1.0 and costs["TRADES"] == 2.0 and costs["TRADES + AWP gamma 0.005"] == 3.0
    assert reproduce.method_passes({"method": "pgd", "steps": 10}) == 11
    for single_step in ("fgsm-rs", "n-fgsm"):  # one step whatever the protocol's steps (fmnist's are 2)
        assert reproduce.method_passes({"method": single_step, "steps": 2}) == 2


def test_a_piece_reports_the_training_time_its_model_file_records(tmp_path: Path, monkeypatch) -> None:
    """The model file's time counts a resumed piece's earlier epochs (tested with finetune's resume)."""
    reproduce = import_benchmark("reproduce")
    trained = SimpleNamespace(provenance=SimpleNamespace(finetune=SimpleNamespace(seconds=7200.04)))
    monkeypatch.setattr(reproduce, "_train", lambda *a, **k: trained)
    out = tmp_path / "row1-abc-seed0.safetensors"
    assert reproduce.trained_model("model", "data", out, {}, 0, False, {}) == (trained, 7200.0)
    assert json.loads(out.with_suffix(".seconds.json").read_text())["train_seconds"] == 7200.0


def test_convergence_rule_judges_the_last_fifth_of_epochs_against_the_best() -> None:
    reproduce = import_benchmark("reproduce")
    flat = [{"epoch": i, "val_robust": v} for i, v in enumerate([20, 40, 50, 55, 56, 56.5, 56, 55.8, 56.2, 56.4])]
    assert reproduce.converged(flat) is True
    rising = flat[:-2] + [{"epoch": 8, "val_robust": 58.0}, {"epoch": 9, "val_robust": 60.0}]
    assert reproduce.converged(rising) is False  # epoch 8 is 2 points below the best (epoch 9)
    collapsed = flat[:-1] + [{"epoch": 9, "val_robust": 30.0}]
    assert reproduce.converged(collapsed) is False
    assert reproduce.converged([{"epoch": 1, "val_robust": None}]) is None
    assert reproduce.converged([{"epoch": 1, "val_robust": 10.0}]) is True  # one epoch is its own best


def test_the_fmnist_protocol_measures_what_the_issue_asks() -> None:
    reproduce = import_benchmark("reproduce")
    s = reproduce.PROTOCOLS["fmnist"]
    rows = reproduce.rows_of("fmnist", s["model"])
    assert len(rows) >= 8 and len(s["seeds"]) >= 3 and s["n"] >= 2000 and s["check_n"] >= 500
    assert s["train_n"] is None and s["input_size"] == "1x28x28" and s["dataset"] == "Fashion-MNIST"
    assert [r.transforms for r in rows[:5]] == [[], ["upsample:factor=2"], ["stride-mod"], ["activation:name=silu"],
                                                ["last-stage-width:ratio=0.5"]]
    budgets = [(r.start, r.training.get("budget"), r.transforms) for r in rows[5:11]]
    assert [b[1] for b in budgets] == [0.1, 0.25, 0.5] * 2 and all(b[0] == "pretrained" for b in budgets)
    assert [rows[i].epochs(s) for i in range(5, 8)] == [max(1, round(s["epochs"] * f)) for f in (0.1, 0.25, 0.5)]
    for silu, plain in reproduce.reference_of("fmnist").items():
        assert rows[silu].training == rows[plain].training and rows[silu].transforms == ["activation:name=silu"]
    model = reproduce.new_model(s)
    assert model.input_size == (1, 28, 28) and model.provenance.model.weights == "random"


def _budget_table(tmp_path: Path) -> dict:
    reproduce = import_benchmark("reproduce")
    rows = reproduce.rows_of("fmnist", "m")
    curve = [{"epoch": e, "val_clean": 80.0, "val_robust": 60.0 + e, "train_acc": 70.0} for e in range(1, 11)]
    table_rows = []
    for index, robust, passes, seconds in ((0, 70.0, 1000, 100.0), (5, 56.0, 100, 12.0), (8, 63.0, 100, 12.0)):
        seeds = [{"seed": s, "robust_acc": robust + s, "clean_acc": 85.0, "train_passes": passes,
                  "train_seconds": seconds, "curve": curve, "epochs_run": 10, "converged": index != 5, "n": 4,
                  "outcome": ["robust"] * 4, "piece": 0} for s in (0, 1, 2)]
        table_rows.append({"index": index, "row": rows[index].label, "start": rows[index].start, "seeds": seeds,
                           "params": 1, "macs": 1, "feature_map": "7x7"})
    return {"protocol": "fmnist", "model": "m", "data": "idx:x", "updated": "now",
            "settings": reproduce.PROTOCOLS["fmnist"], "row_definitions": [r.definition() for r in rows],
            "rows": table_rows, "pieces": [{"date": "d", "device": "cpu", "rows": [0], "seeds": [0], "command": "c"}]}


def test_the_pitch_is_a_measured_sentence_and_a_picture(tmp_path: Path) -> None:
    pitch, table = import_benchmark("pitch"), import_benchmark("evidence_table")
    data = _budget_table(tmp_path)
    found = {f["index"]: f for f in pitch.pitch_findings(data)}
    assert set(found) == {5, 8} and found[5]["compute"] == pytest.approx(10.0)
    mean, lo, hi = found[5]["share"]
    assert mean == pytest.approx(100 * (56 + 57 + 58) / 3 / 71, rel=0.02) and lo < mean < hi
    sentence = pitch.pitch_sentences(data)[0]
    assert "reaches 80% (95% interval over 3 seeds" in sentence and "at 10% of its compute (12% of its wall" in sentence
    text = table.write_table(tmp_path / "evidence-fmnist.md", data, "reason")
    assert "# Architecture changes on Fashion-MNIST" in text and "| 0/3 (not: s0, s1, s2) |" in text
    assert "## The pitch" in text and (tmp_path / "evidence-fmnist-pitch.png").stat().st_size > 5000
    assert pitch._floor(data) == 40.0  # 15 points below the lowest test figure (56%), on a multiple of 5
    data["rows"][0]["seeds"][0]["curve"][3]["val_robust"] = 2.0  # a fall far below: marked on the axis
    pitch.plot_pitch(data, tmp_path / "fall.png", "PGD")
    assert pitch._floor(data) == 40.0 and (tmp_path / "fall.png").stat().st_size > 5000


def test_the_readme_quotes_the_table_only_through_its_generated_block(tmp_path: Path, capsys) -> None:
    reproduce = import_benchmark("reproduce")
    data = _budget_table(tmp_path)
    readme = tmp_path / "README.md"
    begin, end = "<!-- evidence-fmnist: generated by benchmarks/reproduce.py --readme -->", "<!-- /evidence-fmnist -->"
    readme.write_text(f"# before\n{begin}\nold figures\n{end}\nafter\n")
    out = tmp_path / "benchmarks" / "results" / "evidence-fmnist.md"
    reproduce.publish(out, data, readme)
    text = readme.read_text()
    block = text.split(begin)[1].split(end)[0]
    assert text.startswith("# before\n") and text.endswith(f"{end}\nafter\n") and "old figures" not in text
    assert "| 5 | clean-trained, fine-tuned as it is, 10% of the budget | pretrained | 0, 1, 2 | 85.0 ± 0.0 | " \
           "57.0 ± 1.0 |" in block
    assert "fine-tuning an existing clean network reaches 80% (95% interval over 3 seeds" in block
    for link in ("evidence-fmnist-pitch.png", "evidence-fmnist.png", "evidence-fmnist.md"):
        assert f"](benchmarks/results/{link})" in block
    assert out.with_suffix(".json").exists()
    readme.write_text("no markers\n")
    join = ["--quick", "--data", "sample", "--out", str(tmp_path / "q.md"), "--join", str(out.with_suffix(".json"))]
    with pytest.raises(SystemExit) as stop:
        reproduce.main([*join, "--readme", str(readme)])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and len(err.splitlines()) == 1 and "has no evidence-quick markers" in err
    assert not (tmp_path / "q.md").exists() and readme.read_text() == "no markers\n"  # nothing written
    with pytest.raises(SystemExit) as stop:
        reproduce.main([*join, "--table", "methods", "--readme", str(readme)])
    assert stop.value.code == 2


def test_the_guard_line_and_the_curves_of_a_collapsing_seed_are_in_the_results(tmp_path: Path) -> None:
    table = import_benchmark("evidence_table")
    data = _budget_table(tmp_path)
    seed = data["rows"][0]["seeds"][1]
    seed["curve"] = [{**c, "val_robust": 5.0 if c["epoch"] == 7 else c["val_robust"]} for c in seed["curve"]]
    seed["collapse"] = {"epoch": 7, "val_robust": 5.0, "train_acc": 75.0, "best_epoch": 6, "best_val_robust": 66.0,
                        "best_train_acc": 70.0, "action": "warn"}
    text = table.write_table(tmp_path / "evidence-fmnist.md", data, "reason")
    assert "- row 0, seed 1: `catastrophic overfitting in epoch 7: validation PGD accuracy fell to 5.0% from 66.0% " \
           "(epoch 6)" in text and "training on (--on-collapse warn)" in text
    assert text.count("catastrophic overfitting in epoch") == 1  # the healthy seeds say nothing
    curves = tmp_path / "evidence-fmnist-curves.png"
    assert "](evidence-fmnist-curves.png)" in text and curves.read_bytes()[:4] == b"\x89PNG"
    del seed["collapse"]
    data["table"] = "methods"
    data["rows"] = data["rows"][:2]
    data["rows"][0]["row"], data["rows"][1]["row"] = "FGSM-RS (Wong et al. 2020)", "N-FGSM (de Jorge et al. 2022)"
    text = table.write_table(tmp_path / "methods-fmnist-eps0.1.md", data, "reason")
    assert text.startswith("# Fast adversarial training side by side on Fashion-MNIST: FGSM-RS and N-FGSM at eps 0.1 "
                           "(protocol `fmnist`)\n") and "the guard found no collapse in any row or seed" in text


def test_the_methods_table_pairs_n_fgsm_with_fgsm_rs_at_the_eps_asked() -> None:
    r = import_benchmark("reproduce")
    methods = [row.training["method"] for row in r.rows_of("cpu", "cifar:wrn-16-1", "methods")]
    assert methods == ["fgsm-rs", "n-fgsm", "pgd"]
    assert r.rows_of("fmnist", "cifar:wrn-10-1", "methods") == import_benchmark("protocols").METHOD_ROWS
    assert r.reference_of("cpu", "methods") == {}
    args = r.build_parser().parse_args(["--protocol", "cpu", "--table", "methods", "--eps", "16/255"])
    name, s = r.protocol_settings(args)
    assert s["eps"] == "16/255" and s["method"] == "fgsm-rs" and s["epochs"] == 3  # the budget stays the protocol's
    assert r.default_out(name, s, args).name == "methods-cpu-eps16-255.md"


@pytest.mark.slow
def test_the_methods_table_is_built_in_pieces_like_the_evidence_table(tmp_path: Path) -> None:
    for args in (["--table", "methods", "--eps", "16/255", "--rows", "0", "--seeds", "0"],
                 ["--table", "methods", "--eps", "16/255", "--rows", "1", "--seeds", "0", "--merge"]):
        res = _reproduce(tmp_path, *args)
        assert res.returncode == 0, res.stderr[-2000:]
    table = json.loads((tmp_path / "table.json").read_text())
    rows = {r["index"]: r for r in table["rows"]}
    assert table["table"] == "methods" and table["settings"]["eps"] == "16/255"
    assert [rows[i]["training"]["method"] for i in (0, 1)] == ["fgsm-rs", "n-fgsm"]
    assert rows[1]["seeds"][0]["vs_baseline"]["row"] == 0 and rows[1]["seeds"][0]["eps"] == "16/255"
    res = _reproduce(tmp_path, "--rows", "0", "--seeds", "1", "--merge")  # the evidence table is another table
    assert res.returncode == 1 and "measured with other" in res.stderr
