"""YAML recipes: schema checks with line numbers, --set overrides, and `harden run` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from harden.cli import main
from harden.errors import UsageError
from harden.recipes import load_recipe, parse_recipe
from harden.serialization import read_provenance, read_reports

ROOT = Path(__file__).resolve().parent.parent

GOOD = """\
name: tiny
model:
  spec: tests.tiny_models:tiny_cnn
  num_classes: 10
  input_size: 32
data:
  train: sample
transforms:
  - activation:name=silu
finetune:
  method: fgsm-rs
  eps: 8/255
  epochs: 1
  lr: 0.05
  train_n: 128
  batch_size: 64
  val_n: 64
  val_steps: 2
evaluate:
  attacks: [pgd]
  steps: 2
  n: 64
"""


def _error(text: str, **kw) -> str:
    with pytest.raises(UsageError) as info:
        parse_recipe(text, source="r.yaml", **kw)
    return str(info.value)


def test_shipped_recipes_are_valid() -> None:
    names = {p.name for p in (ROOT / "recipes").glob("*.yaml")}
    assert {"quickstart.yaml", "rcm-resnet18-cifar10.yaml", "trades-silu-resnet18.yaml"} <= names
    quick = load_recipe(ROOT / "recipes" / "quickstart.yaml")
    assert quick.values["data"]["train"] == "sample" and quick.values["transforms"]
    rcm = load_recipe(ROOT / "recipes" / "rcm-resnet18-cifar10.yaml", check_data=False)  # data/cifar10 absent here
    assert rcm.values["finetune"]["method"] == "pgd" and "autoattack" in rcm.values["evaluate"]["attacks"]
    assert sorted(rcm.values["variants"].values()) == [["strides:pattern=1122"], ["upsample:factor=2"]]
    trades = load_recipe(ROOT / "recipes" / "trades-silu-resnet18.yaml", check_data=False)
    assert trades.values["finetune"]["method"] == "trades" and trades.values["transforms"] == ["activation:name=silu"]
    assert quick.values["finetune"]["eps"] == pytest.approx(8 / 255)  # "8/255" becomes a number
    gray = load_recipe(ROOT / "recipes" / "quickstart-fmnist.yaml")
    assert gray.values["model"]["input_size"] == "1x28x28" and gray.values["model"]["kwargs"] == {"base_width": 8}
    assert gray.values["data"]["train"] == "sample:fashion-mnist"


def test_model_input_size_and_constructor_arguments_in_a_recipe() -> None:
    text = GOOD.replace("  input_size: 32", "  input_size: 1x28x20\n  kwargs: {base_width: 8, strides: [1, 2]}")
    values = parse_recipe(text, source="r.yaml").values
    assert values["model"]["input_size"] == "1x28x20"
    assert values["model"]["kwargs"] == {"base_width": 8, "strides": [1, 2]}
    assert "model.input_size: input size must be N, HxW or CxHxW" in _error(
        GOOD.replace("  input_size: 32", "  input_size: 28x"))
    assert "argument names are Python identifiers" in _error(
        GOOD.replace("  input_size: 32", "  input_size: 32\n  kwargs: {'in chans': 1}"))
    assert "a plain value or a list of them" in _error(
        GOOD.replace("  input_size: 32", "  input_size: 32\n  kwargs: {depths: {a: 1}}"))


@pytest.mark.slow
def test_the_demo_takes_a_clean_model_to_clearly_robust(tmp_path) -> None:
    out = tmp_path / "demo"
    res = CliRunner().invoke(main, ["run", str(ROOT / "recipes" / "quickstart-fmnist.yaml"), "--out", str(out),
                                    "--quiet"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rows = {r["model"]: r for r in json.loads((out / "comparison.json").read_text())["rows"]}
    start, tuned = rows["start"]["robust_ci95"]["PGD-10"], rows["baseline"]["robust_ci95"]["PGD-10"]
    assert tuned[0] > start[1] + 10  # the fine-tuned model's interval lies well above the start's
    assert "| start | none |" in res.output and "too small to tell whether SiLU helps" in res.output


def test_unknown_keys_and_wrong_types_name_the_key_and_line() -> None:
    assert _error(GOOD.replace("finetune:", "finetun:")) == (
        "r.yaml, line 10: unknown key 'finetun' in the recipe; did you mean: finetune? "
        "(known: name, description, model, data, pretrain, transforms, variants, baseline, finetune, evaluate, "
        "tracking)")
    msg = _error(GOOD.replace("  epochs: 1", "  epochs: ten"))
    assert msg == "r.yaml, line 13: finetune.epochs must be an integer, got 'ten'"
    assert _error(GOOD.replace("  lr: 0.05", "  lrate: 0.05")).startswith(
        "r.yaml, line 14: unknown key 'lrate' in finetune")
    assert _error(GOOD.replace("  num_classes: 10", "  num_classes: [10]")) == (
        "r.yaml, line 4: model.num_classes must be an integer, got a list")
    assert "line 11: finetune.method must be one of pgd, trades, fgsm-rs, clean" in _error(
        GOOD.replace("method: fgsm-rs", "method: fgsm"))
    assert _error(GOOD.replace("  spec: tests.tiny_models:tiny_cnn\n", "")) == "r.yaml, line 3: model needs 'spec' " \
        "(model spec: timm name, tv:NAME, cifar:NAME, package.module:factory)"
    assert "line 12: finetune: --eps must be in (0, 1]" in _error(GOOD.replace("eps: 8/255", "eps: 8"))
    assert "line 9: unknown transform" in _error(GOOD.replace("activation:name=silu", "activaton:name=silu"))
    assert "line 20: evaluate.attacks[0] must be one of" in _error(GOOD.replace("[pgd]", "[pdg]"))
    assert "line 13: 'eps' is given twice in finetune (first at line 12)" in _error(
        GOOD.replace("  eps: 8/255", "  eps: 8/255\n  eps: 4/255"))
    assert "r.yaml, line 4: not valid YAML" in _error("name: x\nmodel: [\n  spec: 1\n: :")


def test_set_overrides_are_checked_like_the_file() -> None:
    r = parse_recipe(GOOD, source="r.yaml", overrides=[("finetune.epochs", "3"), ("evaluate.n", "16"),
                                                       ("finetune.eps", "4/255"), ("finetune.lr", "")])
    assert r.values["finetune"]["epochs"] == 3 and r.values["evaluate"]["n"] == 16
    assert r.values["finetune"]["eps"] == pytest.approx(4 / 255) and "lr" not in r.values["finetune"]
    assert _error(GOOD, overrides=[("finetune.epochs", "three")]) == (
        "--set finetune.epochs: finetune.epochs must be an integer, got 'three'")
    assert _error(GOOD, overrides=[("finetun.epochs", "3")]).startswith(
        "--set finetun.epochs: unknown key 'finetun' in the recipe; did you mean: finetune?")
    assert "--set finetune.batch_size: finetune: --batch-size must be at least 1" in _error(
        GOOD, overrides=[("finetune.batch_size", "0")])


def test_cli_run_reports_a_bad_recipe_in_one_line(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("  batch_size: 64", "  batch_size: 0"))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", str(bad), "--out", str(out)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output == f"error: {bad}, line 16: finetune: --batch-size must be at least 1, got 0\n"
    assert not out.exists()
    result = CliRunner().invoke(main, ["run", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = CliRunner().invoke(main, ["run", str(ROOT / "recipes" / "quickstart.yaml"), "--set", "epochs"])
    assert result.exit_code == 2 and "--set takes key=value" in result.output


def _tree(root: Path, splits=("train", "val")) -> None:
    from PIL import Image

    for split in splits:
        for label, cls in enumerate(("a", "b")):
            (root / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.new("L", (20, 12), 60 * label + 10 * i).save(root / split / cls / f"{i}.png")


def test_data_paths_are_read_beside_the_recipe_and_checked(tmp_path, monkeypatch) -> None:
    from harden.recipes.run_plan import plan_run
    from harden.recipes.steps import load_data

    _tree(tmp_path / "project" / "pets")
    recipe = tmp_path / "project" / "pets.yaml"
    text = GOOD.replace("  train: sample\n", "  train: imagefolder:pets\n  test_split: val\n  resize: 16x20\n"
                                             "  crop: center\n").replace("num_classes: 10", "num_classes: 2")
    recipe.write_text(text)
    monkeypatch.chdir(tmp_path)  # the recipe is elsewhere: its data is read beside it
    checked = CliRunner().invoke(main, ["run", str(recipe), "--check"])
    assert checked.exit_code == 0, checked.output
    r = load_recipe(recipe)
    assert r.values["data"]["resize"] == "16x20" and r.values["data"]["test_split"] == "val"
    plan = plan_run(r, tmp_path / "out")
    assert plan.data["train"] == f"imagefolder:{tmp_path / 'project' / 'pets'}"
    import harden

    base = harden.wrap(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.AdaptiveAvgPool2d(1),
                                           torch.nn.Flatten(), torch.nn.Linear(2, 2)), input_size=(1, 12, 16))
    train, test = load_data(plan, base)
    assert (train.split, test.split, len(test)) == ("train", "val", 6) and train[0][0].shape == (1, 12, 16)

    recipe.write_text(text.replace("imagefolder:pets", "imagefolder:gone"))
    missing = CliRunner().invoke(main, ["run", str(recipe), "--check"])
    assert missing.exit_code == 2 and missing.output == (
        f"error: {recipe}, line 7: data.train: data root 'gone' does not exist or is not a directory\n")
    recipe.write_text(text.replace("train: imagefolder:pets", "train: sample"))
    assert "line 8: data.test: split must be one of train, test for sample data, got 'val'" in CliRunner().invoke(
        main, ["run", str(recipe), "--check"]).output
    assert _error(text.replace("resize: 16x20", "resize: big")) == (
        "r.yaml, line 9: data.resize must be N or HxW (e.g. 36 or 72x64), got 'big'")
    assert "data.crop must be one of center, none" in _error(text.replace("crop: center", "crop: random"))
    shipped = CliRunner().invoke(main, ["run", str(ROOT / "recipes" / "rcm-resnet18-cifar10.yaml"), "--check"])
    assert shipped.exit_code == 2 and "data.train: data root 'data/cifar10' does not exist" in shipped.output


def test_run_writes_models_reports_and_the_comparison(tmp_path) -> None:
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(GOOD + "pretrain:\n  epochs: 1\n  lr: 0.1\n  train_n: 128\n  batch_size: 64\n"
                      "  val_n: 64\n  val_steps: 1\n")
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", str(recipe), "--out", str(out), "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert {"start.safetensors", "baseline.safetensors", "hardened.safetensors", "start.report.json",
            "baseline.report.json", "hardened.report.json", "comparison.md", "comparison.json",
            "recipe.yaml", "baseline.curves.png", "hardened.curves.png"} <= names
    assert not any(n.endswith((".tmp", ".ckpt.pt")) for n in names)
    table = json.loads((out / "comparison.json").read_text())
    rows = {r["model"]: r for r in table["rows"]}
    assert list(rows) == ["start", "baseline", "hardened"]
    assert rows["hardened"]["transforms"] == ["activation:name=silu"] and rows["baseline"]["transforms"] == []
    assert table["attack_columns"] == ["PGD-2"]
    for r in rows.values():
        assert 0 <= r["clean_acc"] <= 100 and 0 <= r["robust"]["PGD-2"] <= r["clean_acc"]
    hardened = read_provenance(out / "hardened.safetensors")
    assert hardened.transforms[0].name == "activation"
    assert hardened.finetune.method == "fgsm-rs" and hardened.finetune.previous.method == "clean"
    assert read_provenance(out / "baseline.safetensors").transforms == []
    assert [r["attack"] for r in read_reports(out / "hardened.safetensors")] == ["pgd"]
    md = (out / "comparison.md").read_text()
    assert "| baseline | none |" in md and "| hardened | activation:name=silu |" in md and "PGD-2 %" in md
    assert "same weights" in md and "pretrain stage" in md
    assert "the 95% interval of each accuracy (Wilson, n=64)" in md and "not training noise" in md
    assert "hardened vs baseline, PGD-2: robust " in md and "exact McNemar p = " in md
    assert all(r["robust_ci95"]["PGD-2"][0] <= r["robust"]["PGD-2"] <= r["robust_ci95"]["PGD-2"][1]
               for r in rows.values())
    assert md.strip() in result.output  # the table is printed too


class _Interrupt(Exception):
    """Stands for a run killed part-way (pre-emption, Ctrl-C)."""


def _untimed(value):
    """``value`` without its wall-clock fields, which differ between any two runs."""
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if "seconds" not in k}
    return [_untimed(v) for v in value] if isinstance(value, list) else value


def _table(out: Path) -> list[dict]:
    return _untimed(json.loads((out / "comparison.json").read_text())["rows"])


@pytest.mark.slow
def test_run_resume_continues_an_interrupted_run_to_the_same_result(tmp_path, monkeypatch) -> None:
    from safetensors.torch import load_file

    import harden.evaluation
    import harden.training

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(GOOD.replace("  epochs: 1\n", "  epochs: 2\n") + "  batch_size: 16\n")
    args = ["run", str(recipe), "--quiet", "--out"]
    whole = tmp_path / "whole"
    assert CliRunner().invoke(main, [*args, str(whole)], catch_exceptions=False).exit_code == 0

    # first attempt: killed after the hardened model's first epoch
    real_finetune, real_evaluate = harden.training.finetune, harden.evaluation.evaluate

    def stop_after_epoch_1(model, data, config=None, **kw):
        def callback(entry):
            if entry["epoch"] == 1:
                raise _Interrupt
        return real_finetune(model, data, config, **kw, callback=callback if "hardened" in str(kw["output"]) else None)

    monkeypatch.setattr(harden.training, "finetune", stop_after_epoch_1)
    part = tmp_path / "part"
    with pytest.raises(_Interrupt):
        CliRunner().invoke(main, [*args, str(part)], catch_exceptions=False)
    assert (part / "hardened.ckpt.pt").exists() and not (part / "hardened.safetensors").exists()
    assert set(json.loads((part / "run-state.json").read_text())["done"]) == {
        "evaluate:start:pgd", "finetune:baseline", "evaluate:baseline:pgd"}

    # second attempt: the hardened model's evaluation is killed after its second batch
    monkeypatch.setattr(harden.training, "finetune", real_finetune)

    def stop_after_batch_2(model, data, config=None, **kw):
        seen = []

        def on_batch(_info):
            seen.append(1)
            if len(seen) == 2:
                raise _Interrupt
        return real_evaluate(model, data, config, **kw, on_batch=on_batch if "hardened" in str(kw["report"]) else None)

    monkeypatch.setattr(harden.evaluation, "evaluate", stop_after_batch_2)
    with pytest.raises(_Interrupt):
        CliRunner().invoke(main, [*args, str(part), "--resume"], catch_exceptions=False)
    assert (part / "hardened.safetensors").exists() and (part / "hardened.eval-pgd.json.progress").exists()

    monkeypatch.setattr(harden.evaluation, "evaluate", real_evaluate)
    result = CliRunner().invoke(main, [*args, str(part), "--resume"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "[baseline] fine-tuning finished earlier" in result.output
    assert "[hardened] pgd: finished earlier" not in result.output
    assert json.loads((part / "hardened.eval-pgd.json").read_text())["resumed"] is True
    assert _table(part) == _table(whole)
    for name in ("baseline", "hardened"):
        a, b = load_file(str(whole / f"{name}.safetensors")), load_file(str(part / f"{name}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert len(read_reports(part / f"{name}.safetensors")) == 1


def test_run_resume_refuses_a_missing_or_different_run(tmp_path) -> None:
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(GOOD)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", str(recipe), "--out", str(out), "--resume"])
    assert result.exit_code == 2 and result.output.strip().splitlines() == [
        f"error: nothing to resume in '{out}': it holds no run-state.json from an earlier `harden run`; "
        "run without --resume"]
    out.mkdir()
    (out / "run-state.json").write_text(json.dumps({"recipe": load_recipe(recipe).values, "done": {}}))
    result = CliRunner().invoke(main, ["run", str(recipe), "--out", str(out), "--resume", "--set", "evaluate.n=32",
                                       "--set", "finetune.lr=0.1"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "holds a run of a different recipe (it differs at finetune.lr, evaluate.n)" in result.output
