"""Self-describing safetensors files: round trips, recipes, safety, atomic writes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import harden
from harden.errors import HardenError, UsageError
from harden.serialization import PROVENANCE_KEY, add_report, read_provenance, read_reports

COMBOS = [
    [],
    ["upsample:factor=2"],
    ["upsample:factor=3,mode=bilinear"],
    ["stride-mod"],
    ["strides:pattern=21212"],
    ["stride-mod", "upsample:factor=2,mode=bilinear"],
    ["activation:name=silu"],
    ["last-stage-width:ratio=0.5"],
    ["stage-widths:widths=1/0.5/2/0.5"],
    ["stride-mod", "last-stage-width:ratio=0.5", "activation:name=gelu", "upsample:factor=2"],
]


@pytest.fixture(scope="module")
def base() -> harden.HardenedModel:
    return harden.load_model("timm:resnet18", num_classes=10, input_size=32)


@pytest.mark.parametrize("transforms", COMBOS, ids=lambda t: "+".join(t) or "none")
def test_round_trip_gives_identical_logits(tmp_path, base, transforms) -> None:
    model = harden.apply(base, transforms) if transforms else base
    path = harden.save(model, tmp_path / "m.safetensors")
    loaded = harden.load(path)
    model.eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert [t.name for t in loaded.provenance.transforms] == [t.split(":")[0] for t in transforms]
    assert loaded.state_dict().keys() == model.state_dict().keys()


def test_recipe_is_self_describing(tmp_path, base) -> None:
    model = harden.apply(base, ["upsample:factor=2", "stride-mod"])
    harden.save(model, tmp_path / "m.safetensors")
    rec = read_provenance(tmp_path / "m.safetensors")
    assert rec.model.source == "timm" and rec.model.name == "resnet18"
    assert rec.model.num_classes == 10 and rec.model.input_size == [3, 32, 32]
    assert len(rec.model.mean) == 3 and len(rec.model.std) == 3
    assert [(t.name, t.config) for t in rec.transforms] == [
        ("upsample", {"factor": 2, "mode": "nearest"}), ("stride-mod", {})]
    assert set(rec.versions) >= {"harden", "torch", "timm", "torchvision"}
    assert harden.provenance_of(model).transforms[1].provider == "harden"
    assert harden.recipe(model)["transforms"][1]["provider"] == "harden"  # the deprecated 0.1.0 name


def test_plain_safetensors_without_recipe_says_how_to_load(tmp_path) -> None:
    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(UsageError, match="--model SPEC --weights"):
        harden.load(tmp_path / "plain.safetensors")


def test_truncated_and_foreign_files(tmp_path, base) -> None:
    path = harden.save(base, tmp_path / "m.safetensors")
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(HardenError, match="truncated"):
        harden.load(tmp_path / "cut.safetensors")
    torch.save(base.state_dict(), tmp_path / "m.pt")
    with pytest.raises(UsageError, match="torch checkpoint"):
        harden.load(tmp_path / "m.pt")
    with pytest.raises(UsageError, match="does not exist"):
        harden.load(tmp_path / "missing.safetensors")


def test_user_factory_recipe_needs_trust(tmp_path) -> None:
    model = harden.apply(harden.load_model("tests.user_models:tiny_resnet", input_size=16), ["stride-mod"])
    harden.save(model, tmp_path / "u.safetensors")
    with pytest.raises(HardenError, match="trust"):
        harden.load(tmp_path / "u.safetensors")
    loaded = harden.load(tmp_path / "u.safetensors", trust_code=True)
    x = torch.rand(2, 3, 16, 16)
    model.eval()
    assert torch.equal(model(x), loaded(x))


def test_loading_never_imports_what_metadata_names(tmp_path, base, monkeypatch) -> None:
    path = harden.save(base, tmp_path / "m.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    rec = json.loads(meta[PROVENANCE_KEY])
    rec["model"].update(source="import", name="os:system", spec="os:system")
    meta[PROVENANCE_KEY] = json.dumps(rec)
    save_file(tensors, str(tmp_path / "evil.safetensors"), metadata=meta)
    with pytest.raises(HardenError, match="trust"):
        harden.load(tmp_path / "evil.safetensors")


def test_object_models_need_their_base(tmp_path) -> None:
    from tests.user_models import tiny_resnet

    net = tiny_resnet()
    model = harden.apply(net, ["upsample:factor=2"], input_size=16)
    harden.save(model, tmp_path / "o.safetensors")
    with pytest.raises(HardenError, match="base=model"):
        harden.load(tmp_path / "o.safetensors")
    loaded = harden.load(tmp_path / "o.safetensors", base=tiny_resnet())
    model.eval()
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(model(x), loaded(x))


def test_failed_save_leaves_existing_file_untouched(tmp_path, base, monkeypatch) -> None:
    path = harden.save(base, tmp_path / "m.safetensors")
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", boom)
    with pytest.raises(OSError):
        harden.save(harden.apply(base, ["upsample:factor=2"]), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_reports_are_stored_atomically(tmp_path, base) -> None:
    path = harden.save(base, tmp_path / "m.safetensors")
    add_report(path, {"attack": "pgd", "eps": 8 / 255, "robust_acc": 0.25})
    add_report(path, {"attack": "autoattack", "eps": 8 / 255, "robust_acc": 0.2})
    assert [r["attack"] for r in read_reports(path)] == ["pgd", "autoattack"]
    assert [r["attack"] for r in harden.load(path).reports] == ["pgd", "autoattack"]
