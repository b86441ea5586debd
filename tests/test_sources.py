"""Model sources: specs, sizes, normalization inside the model, weights files, pretrained offline."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import harden
from harden.errors import HardenError, UsageError
from harden.sources import parse_spec


def test_bare_name_resolves_to_timm_then_torchvision() -> None:
    assert parse_spec("resnet18") == ("timm", "resnet18")
    assert parse_spec("tv:resnet18") == ("tv", "resnet18")
    assert parse_spec("regnet_y_400mf") == ("tv", "regnet_y_400mf")  # torchvision-only name
    assert parse_spec("tests.user_models:tiny_resnet") == ("import", "tests.user_models:tiny_resnet")


def test_unknown_model_lists_close_matches() -> None:
    with pytest.raises(UsageError, match="did you mean: .*resnet18"):
        harden.load_model("resnet18x")
    with pytest.raises(UsageError, match="unknown torchvision model"):
        harden.load_model("tv:not_a_net")


def test_num_classes_input_size_and_normalization_inside() -> None:
    model = harden.load_model("tv:resnet18", num_classes=7, input_size=32)
    assert model.num_classes == 7 and model.input_size == (3, 32, 32)
    model.eval()
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(model(x), model.net((x - mean) / std), atol=1e-6)
    custom = harden.load_model("tv:resnet18", num_classes=7, input_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    assert custom.provenance.model.mean == [0.5] * 3 and custom.provenance.model.std == [0.25] * 3


def test_timm_mean_std_come_from_the_pretrained_config() -> None:
    model = harden.load_model("timm:resnet18", num_classes=10, input_size=32)
    assert model.provenance.model.source == "timm"
    assert model.provenance.model.mean == pytest.approx([0.485, 0.456, 0.406])


def test_user_factory_gets_num_classes_and_identity_normalization() -> None:
    model = harden.load_model("tests.user_models:tiny_resnet", num_classes=4, input_size=16)
    assert model.num_classes == 4
    assert model.provenance.model.mean == [0.0, 0.0, 0.0] and model.provenance.model.std == [1.0, 1.0, 1.0]
    with pytest.raises(HardenError, match="not a torch.nn.Module"):
        harden.load_model("tests.user_models:not_a_model", input_size=16)
    with pytest.raises(UsageError, match="cannot import"):
        harden.load_model("no_such_package.mod:factory")


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".safetensors"])
def test_weights_files_load(tmp_path, suffix: str) -> None:
    src = harden.load_model("tests.user_models:tiny_resnet", num_classes=10, input_size=16)
    path = tmp_path / f"w{suffix}"
    state = {k: v.clone() for k, v in src.net.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    loaded = harden.load_model("tests.user_models:tiny_resnet", num_classes=10, input_size=16, weights=path)
    for k, v in src.net.state_dict().items():
        assert torch.equal(v, loaded.net.state_dict()[k])


def test_weight_mismatch_is_explained(tmp_path) -> None:
    src = harden.load_model("tests.user_models:tiny_resnet", num_classes=10, input_size=16)
    path = tmp_path / "w.pt"
    torch.save(src.net.state_dict(), path)
    with pytest.raises(HardenError, match=r"fc.weight \(10, 16\) vs \(3, 16\).*--num-classes"):
        harden.load_model("tests.user_models:tiny_resnet", num_classes=3, input_size=16, weights=path)
    partial = {k: v for k, v in src.net.state_dict().items() if not k.startswith("fc.")}
    torch.save(partial, path)
    with pytest.raises(HardenError, match="2 missing"):
        harden.load_model("tests.user_models:tiny_resnet", num_classes=10, input_size=16, weights=path)


def test_pickled_code_is_refused(tmp_path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "obj": object()}, path)
    with pytest.raises(HardenError, match="pickled Python objects"):
        harden.load_model("tests.user_models:tiny_resnet", input_size=16, weights=path)


def test_missing_weights_file() -> None:
    with pytest.raises(UsageError, match="does not exist"):
        harden.load_model("tests.user_models:tiny_resnet", input_size=16, weights="nope.pt")


def test_pretrained_offline_fails_with_one_clear_line() -> None:
    with pytest.raises(HardenError) as info:
        harden.load_model("timm:resnet18", pretrained=True)
    text = str(info.value)
    assert "--weights" in text and "\n" not in text
    with pytest.raises(HardenError, match="--weights"):
        harden.load_model("tv:resnet18", pretrained=True)
