"""The typed provenance of model files: round trips, the 0.1.0 format, validation, one error line."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import harden
from harden import provenance as pv
from harden.provenance import FORMAT, FinetuneEntry, ModelEntry, Provenance, ProvenanceError, UnknownFormatError
from harden.serialization import LEGACY_PROVENANCE_KEY, PROVENANCE_KEY, read_provenance
from tests.cli_contract import assert_calm, run_cli

OLD_FILE = Path(__file__).parent / "fixtures" / "v0.1" / "model.safetensors"
RECORDS = [pv.ModelEntry, pv.TransformEntry, pv.AwpEntry, pv.ExtraDataEntry, pv.ValidationEntry, pv.FinetuneEntry,
           pv.Provenance]
FREE_FORM = {"extras", "kwargs", "config", "state", "history"}  # JSON the transform, source or trainer defines


def _metadata(path: Path) -> tuple[dict[str, str], dict]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}


def _old_dict() -> dict:
    meta, _ = _metadata(OLD_FILE)
    return json.loads(meta[LEGACY_PROVENANCE_KEY])


def _rewrite(tmp_path: Path, change) -> Path:
    """A copy of the 0.1.0 file whose stored provenance ``change`` has edited."""
    meta, tensors = _metadata(OLD_FILE)
    doc = json.loads(meta[LEGACY_PROVENANCE_KEY])
    change(doc)
    meta[LEGACY_PROVENANCE_KEY] = json.dumps(doc)
    out = tmp_path / "edited.safetensors"
    save_file(tensors, str(out), metadata=meta)
    return out


def test_the_0_1_format_loads_with_every_field_and_round_trips_losslessly() -> None:
    old = _old_dict()
    assert old["format"] == "harden.recipe/1"
    prov = Provenance.from_dict(old)
    assert prov.format == "harden.recipe/1" and prov.model.spec == "cifar:wrn-10-1" and prov.model.num_classes == 10
    assert [t.name for t in prov.transforms] == ["last-stage-width", "activation"]
    assert prov.finetune.method == "pgd" and prov.finetune.validation.n == 16 and prov.finetune.awp is None
    assert prov.versions["harden"] == "0.1.0"
    assert prov.to_dict() == old  # nothing lost or added
    assert Provenance.from_json(prov.to_json()) == prov


def test_files_are_written_in_the_new_format_and_read_back(tmp_path) -> None:
    model = harden.load(OLD_FILE)
    path = harden.save(model, tmp_path / "new.safetensors")
    meta, _ = _metadata(path)
    assert LEGACY_PROVENANCE_KEY not in meta and json.loads(meta[PROVENANCE_KEY])["format"] == FORMAT
    again = read_provenance(path)
    assert again.format == FORMAT and again.versions["harden"] == harden.__version__
    assert again.without_versions() == dataclasses.replace(model.provenance, format=FORMAT).without_versions()


def test_round_trip_of_a_fresh_model_with_transforms() -> None:
    model = harden.apply(harden.load_model("tests.user_models:tiny_resnet", input_size=16), ["stride-mod"])
    prov = harden.provenance_of(model)
    assert prov is not model.provenance and prov == model.provenance
    text = prov.to_json()
    assert json.loads(text)["format"] == FORMAT and Provenance.from_json(text) == prov
    assert "finetune" not in json.loads(text) and "versions" not in json.loads(text)  # only what happened


def test_unknown_keys_are_kept_for_a_newer_harden() -> None:
    doc = _old_dict()
    doc["tracking"] = {"run": "abc"}
    doc["model"]["revision"] = 3
    doc["finetune"]["sampler"] = "balanced"
    prov = Provenance.from_dict(doc)
    assert prov.extras == {"tracking": {"run": "abc"}} and prov.model.extras == {"revision": 3}
    assert prov.finetune.extras == {"sampler": "balanced"}
    assert prov.to_dict() == doc


def _fits(value, hint) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if dataclasses.is_dataclass(hint):
        return isinstance(value, hint) and all(
            _fits(getattr(value, f.name), typing.get_type_hints(hint)[f.name]) for f in dataclasses.fields(hint))
    if origin is list:
        return isinstance(value, list) and all(_fits(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) and _fits(v, args[1]) for k, v in value.items())
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint) and (hint is bool or not isinstance(value, bool))


def test_every_field_is_typed_and_a_loaded_file_fits_the_types() -> None:
    for record in RECORDS:
        hints = typing.get_type_hints(record)
        for f in dataclasses.fields(record):
            assert f.name in hints, f"{record.__name__}.{f.name} has no type"
            if f.name not in FREE_FORM:
                assert "Any" not in str(hints[f.name]), f"{record.__name__}.{f.name} is untyped: {hints[f.name]}"
    prov = harden.load(OLD_FILE).provenance
    assert _fits(prov, Provenance)
    assert isinstance(prov.model, ModelEntry) and isinstance(prov.finetune, FinetuneEntry)
    assert isinstance(prov.finetune.validation, pv.ValidationEntry)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(format="harden.recipe/9"), "unknown provenance format 'harden.recipe/9'"),
    (lambda d: d.pop("format"), "unknown provenance format None"),
    (lambda d: d.pop("model"), "model is missing"),
    (lambda d: d["model"].update(num_classes="ten"), "model.num_classes: expected int, got str"),
    (lambda d: d["model"].update(pretrained=1), "model.pretrained: expected bool, got int"),
    (lambda d: d["model"].update(num_classes=True), "model.num_classes: expected int, got bool"),
    (lambda d: d["transforms"][1].update(changes=[3]), "transforms[1].changes[0]: expected str, got int"),
    (lambda d: d["finetune"]["validation"].update(n=None), "finetune.validation.n: expected int, got null"),
    (lambda d: d.update(transforms={}), "transforms: expected a list, got dict"),
])
def test_a_malformed_provenance_is_one_error_naming_the_field(change, message) -> None:
    doc = _old_dict()
    change(doc)
    with pytest.raises(ProvenanceError) as info:
        Provenance.from_dict(doc)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_an_unknown_format_or_bad_field_in_a_file_is_one_error_line(tmp_path) -> None:
    newer = _rewrite(tmp_path, lambda d: d.update(format="harden.provenance/2"))
    with pytest.raises(UnknownFormatError):
        Provenance.from_json(_metadata(newer)[0][LEGACY_PROVENANCE_KEY])
    for args in (["inspect", newer], ["inspect", "--json", newer]):
        result = run_cli(args)
        assert_calm(result)
        assert result.exit_code == 1 and "unknown provenance format 'harden.provenance/2'" in result.stderr
    with pytest.raises(harden.HardenError, match="has an unknown provenance format"):
        harden.load(newer)
    damaged = _rewrite(tmp_path, lambda d: d["model"].update(input_size="32"))
    result = run_cli(["inspect", damaged])
    assert_calm(result)
    assert result.exit_code == 1 and "damaged harden recipe (model.input_size: expected a list" in result.stderr
    with pytest.raises(ProvenanceError, match="not valid JSON"):
        Provenance.from_json("{")


def test_rebuild_takes_a_mapping_of_either_format() -> None:
    doc = _old_dict()
    rebuilt = harden.pipeline.rebuild(doc)
    assert rebuilt.spec == "cifar:wrn-10-1" and [t.name for t in rebuilt.provenance.transforms] == [
        "last-stage-width", "activation"]
    with pytest.raises(UnknownFormatError):
        harden.pipeline.rebuild({**doc, "format": "harden.recipe/0"})


def test_the_0_1_recipe_function_is_a_deprecated_alias() -> None:
    model = harden.load(OLD_FILE)
    with pytest.warns(DeprecationWarning, match="provenance_of"):
        plain = harden.recipe(model)
    assert plain == model.provenance.to_dict() and plain["finetune"]["method"] == "pgd"
    plain["model"]["spec"] = "changed"
    assert model.spec == "cifar:wrn-10-1"  # a copy
    with pytest.raises(harden.UsageError, match="provenance_of"):
        harden.provenance_of(object())


def test_record_finetune_keeps_the_one_before() -> None:
    prov = Provenance.from_dict(_old_dict())
    first = prov.finetune
    second = dataclasses.replace(first, method="trades", previous=None)
    prov.record_finetune(second)
    assert prov.finetune is second and second.previous is first
    assert prov.to_dict()["finetune"]["previous"]["method"] == "pgd"


def _train_one_step(model: torch.nn.Module) -> None:
    """What a user's own training loop does to the weights: one SGD step on random images."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    x, y = torch.rand(4, *model.input_size), torch.randint(0, model.num_classes, (4,))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def _random_warnings(model: torch.nn.Module) -> list[str]:
    from harden.model import warn_if_random

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_if_random(model, "evaluating")
    return [str(w.message) for w in caught if "random weights" in str(w.message)]


def test_a_model_trained_in_the_users_own_loop_is_not_called_random(tmp_path: Path) -> None:
    model = harden.load_model("tests.user_models:tiny_resnet", input_size=16)
    assert _random_warnings(model)  # built at random, not trained: the warning is right
    _train_one_step(model)
    assert not _random_warnings(model) and model.provenance.trained_outside  # noticed in memory
    harden.save(model, tmp_path / "m.safetensors")
    back = harden.load(tmp_path / "m.safetensors", trust_code=True)
    assert back.provenance.trained_outside and back.provenance.model.weights == "random"
    assert not _random_warnings(back) and pv.weights_text(back.provenance) == "random + trained outside harden"


def test_an_untrained_or_only_transformed_model_stays_random_in_its_file(tmp_path: Path) -> None:
    model = harden.apply(harden.load_model("tests.user_models:tiny_resnet", input_size=16), ["stride-mod"])
    harden.save(model, tmp_path / "m.safetensors")
    meta, _ = _metadata(tmp_path / "m.safetensors")
    assert "trained_outside" not in json.loads(meta[PROVENANCE_KEY])  # files as before for untrained models
    back = harden.load(tmp_path / "m.safetensors", trust_code=True)
    assert back.provenance.untrained and _random_warnings(back)
    _train_one_step(back)  # a random model read from a file, then trained outside harden, then saved again
    harden.save(back, tmp_path / "n.safetensors")
    assert harden.load(tmp_path / "n.safetensors", trust_code=True).provenance.trained_outside


def test_training_outside_harden_before_a_transform_is_kept_in_the_provenance() -> None:
    model = harden.load_model("tests.user_models:tiny_resnet", input_size=16)
    _train_one_step(model)
    hardened = harden.apply(model, ["stride-mod"])
    assert hardened.provenance.trained_outside and not _random_warnings(hardened)
