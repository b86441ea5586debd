"""A new user's own model and data, end to end: grayscale and non-square models through apply, finetune,
evaluate and compare (CLI and library), every transform and measurement at C = 1 and H != W, and the
small mistakes that used to end in a traceback or a silent surprise."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

import harden
from harden.cli import main

TRANSFORMS = ["upsample:factor=2", "stride-mod", "strides:pattern=12", "activation:name=silu",
              "last-stage-width:ratio=0.5", "stage-widths:widths=1/2/0.5"]


def _cli(*args: object) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_error_line(res: object, code: int, needle: str) -> None:
    lines = [ln for ln in res.output.strip().splitlines() if ln]  # type: ignore[attr-defined]
    assert res.exit_code == code, res.output  # type: ignore[attr-defined]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], res.output  # type: ignore


@pytest.fixture(scope="module")
def gray_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train/ and test/ of 3 classes of grayscale PNGs of mixed sizes: dark, mid and bright images."""
    root = tmp_path_factory.mktemp("gray")
    gen = torch.Generator().manual_seed(0)
    for split, count in (("train", 24), ("test", 12)):
        for label, level in enumerate((40, 128, 215)):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in range(count):
                noise = (torch.rand(20 + i % 3, 18, generator=gen) * 30).to(torch.uint8).numpy()
                Image.fromarray(noise + level - 15, mode="L").save(folder / f"{i}.png")
    return root


# --------------------------------------------------------------------------------------------- grayscale


def test_grayscale_model_apply_finetune_evaluate_compare(gray_folder: Path, tmp_path: Path) -> None:
    data = f"imagefolder:{gray_folder}"
    base, hard = tmp_path / "base.safetensors", tmp_path / "hard.safetensors"
    res = _cli("apply", "cifar:wrn-10-1", "--num-classes", 3, "--input-size", "1x16x16", "--mean", "0.5", "--std",
               "0.25", "-o", base)
    assert res.exit_code == 0, res.output
    assert "input 1x16x16, weights random" in res.output and "normalization: mean 0.5 std 0.25" in res.output
    res = _cli("apply", base, "--stride-mod", "--activation", "silu", "-o", hard)
    assert res.exit_code == 0 and "4x4      8x8" in res.output, res.output  # the feature map before pooling
    for model, out in ((base, tmp_path / "base-at.safetensors"), (hard, tmp_path / "hard-at.safetensors")):
        res = _cli("finetune", model, "--data", data, "-o", out, "--method", "fgsm-rs", "--epochs", 2, "--lr", "0.05",
                   "--batch-size", 16, "--val-n", 9, "--val-steps", 1, "--eps", "8/255", "--quiet")
        assert res.exit_code == 0, res.output
        assert "with random weights" in res.output and "wrote" in res.output
        assert "input 1x16x16, normalization mean 0.5 std 0.25" in res.output
    reports = []
    for name in ("base-at", "hard-at"):
        report = tmp_path / f"{name}.json"
        res = _cli("evaluate", tmp_path / f"{name}.safetensors", "--data", data, "-n", 36, "--attack", "pgd",
                   "--steps", 3, "--report", report, "-q")
        assert res.exit_code == 0, res.output
        assert "weights random + fine-tuned; normalization mean 0.5 std 0.25" in res.output
        reports.append(json.loads(report.read_text()))
    for r in reports:
        assert r["n"] == 36 and r["model"]["input_size"] == [1, 16, 16] and 0 <= r["robust_acc"] <= r["clean_acc"]
        assert r["clean_acc"] > 50  # three brightness levels: two epochs learn them
        assert r["selection"]["files_head"][0].endswith(".png")
    res = _cli("compare", tmp_path / "base-at.json", tmp_path / "hard-at.json")
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert "(cifar:wrn-10-1 (fine-tuned: fgsm-rs))" in lines[0]
    assert "stride-mod" in lines[1] and "activation:name=silu" in lines[1]
    assert "paired on the same 36 images" in res.output


def test_grayscale_model_on_fashion_mnist_idx() -> None:
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion-mnist"
    if not shared.is_dir():
        pytest.skip("the shared Fashion-MNIST folder is not beside the repository")
    model = harden.load_model("cifar:wrn-10-1", num_classes=10, input_size="1x28x28",
                              model_kwargs={"base_width": 8, "in_chans": 1})
    data = harden.image_dataset(f"idx:{shared}", "train", input_size=model.input_size)
    tuned = harden.finetune(model, data, method="clean", epochs=2, train_n=3000, val_n=64, batch_size=64, lr=0.2,
                            schedule="onecycle", progress=False, curves=False)
    report = harden.evaluate(tuned, f"idx:{shared}", attack="pgd", steps=2, eps=0.1, n=128, random_subset=True)
    assert report["model"]["input_size"] == [1, 28, 28] and report["clean_acc"] > 40  # chance is 10%
    assert report["robust_acc"] < report["clean_acc"]


# ---------------------------------------------------------------------------------------------- 64 x 48


def test_non_square_model_apply_finetune_evaluate(tmp_path: Path) -> None:
    root = tmp_path / "scans"
    gen = torch.Generator().manual_seed(1)
    for label, colour in enumerate(((200, 40, 40), (40, 40, 200))):
        for split in ("train", "test"):
            folder = root / split / f"c{label}"
            folder.mkdir(parents=True)
            for i in range(10):
                noise = (torch.rand(70, 52, 3, generator=gen) * 40).to(torch.uint8).numpy()
                Image.fromarray(noise + torch.tensor(colour, dtype=torch.uint8).numpy() - 20).save(folder / f"{i}.jpg")
    out = tmp_path / "wide.safetensors"
    res = _cli("apply", "tests.tiny_models:tiny_cnn", "--trust-code", "--num-classes", 2, "--input-size", "64x48",
               "--upsample", 2, "-o", out)
    assert res.exit_code == 0 and "input 3x64x48" in res.output, res.output
    tuned = tmp_path / "wide-at.safetensors"
    res = _cli("finetune", out, "--trust-code", "--data", f"imagefolder:{root}", "-o", tuned, "--method", "pgd",
               "--steps", 1, "--epochs", 1, "--batch-size", 8, "--val-n", 4, "--val-steps", 1, "--quiet")
    assert res.exit_code == 0, res.output
    report = harden.evaluate(harden.load(tuned, trust_code=True), f"imagefolder:{root}", attack="fgsm", n=20)
    assert report["model"]["input_size"] == [3, 64, 48] and report["n"] == 20
    for options in (["--resize", "80"], ["--crop", "none"]):
        res = _cli("evaluate", tuned, "--trust-code", "--data", f"imagefolder:{root}", *options, "-n", 20,
                   "--attack", "fgsm", "-q", "--json")
        assert res.exit_code == 0, res.output
        assert json.loads(res.output[res.output.index("{"):])["n"] == 20
    _one_error_line(_cli("evaluate", tuned, "--trust-code", "--data", f"imagefolder:{root}", "--resize", "80y60"), 2,
                    "--resize must be N or HxW")


# ------------------------------------------------------------------- transforms and measurements at C=1, H!=W


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_every_transform_works_on_a_grayscale_non_square_model(transform: str, tmp_path: Path) -> None:
    from harden.lipschitz import lipschitz_bound
    from harden.summary import model_facts

    torch.manual_seed(0)
    model = harden.load_model("cifar:wrn-10-1", num_classes=4, input_size="1x32x24")
    out = harden.apply(model, [transform])
    x = torch.rand(2, 1, 32, 24)
    assert out(x).shape == (2, 4)
    facts = model_facts(out)
    assert facts.macs > 0 and facts.input_size == (1, 32, 24)
    bound = lipschitz_bound(out)
    assert math.isfinite(bound.bound) and bound.bound > 0 and tuple(bound.input_size)[-2:] == (32, 24)
    harden.save(out, tmp_path / "m.safetensors")
    again = harden.load(tmp_path / "m.safetensors")
    out.eval()
    again.eval()
    assert torch.equal(out(x), again(x))


def test_the_search_space_is_read_off_a_grayscale_non_square_model() -> None:
    from harden.searching.space import build_space

    model = harden.load_model("cifar:wrn-10-1", num_classes=4, input_size="1x32x24")
    space = build_space(model, None, ())
    names = {d.name for d in space.dimensions}
    assert {"strides", "activation", "last-stage-width", "upsample"} <= names
    for params in ({d.name: d.choices[-1] for d in space.dimensions}, space.identity()):
        candidate = harden.apply(model, space.transforms(params)) if space.transforms(params) else model
        assert candidate(torch.rand(1, 1, 32, 24)).shape == (1, 4)


# ----------------------------------------------------------------------------------- the smaller mistakes


def test_channels_and_statistics_are_checked_in_one_line(tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    _one_error_line(_cli("apply", "cifar:wrn-10-1", "--input-size", "1x28x28", "--mean", "0.5,0.5", "-o", out), 2,
                    "--mean needs 1 value (one per input channel), got 2")
    _one_error_line(_cli("apply", "tv:resnet18", "--input-size", "1x28x28", "-o", out), 2,
                    "takes 3-channel images; for 1-channel data use a timm or cifar: model")
    _one_error_line(_cli("apply", "cifar:wrn-10-1", "--input-size", "28x", "-o", out), 2,
                    "input size must be N, HxW or CxHxW")
    _one_error_line(_cli("apply", "cifar:vgg11_bn", "--input-size", "1x20x20", "-o", out), 2,
                    "does not run at input size 1x20x20")
    assert not out.exists()
    model = harden.load_model("resnet18", num_classes=3, input_size="1x28x28")  # timm: built with in_chans=1
    assert model.provenance.model.kwargs == {"in_chans": 1} and model.input_size == (1, 28, 28)
    assert model.provenance.model.mean == [pytest.approx(0.449)]  # the channel average of ImageNet's


def test_a_user_model_says_how_many_channels_it_takes() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 2))
    model = harden.apply(net, ["activation:name=silu"], input_size=(20, 12), mean=[0.3], std=[0.2])
    assert model.input_size == (1, 20, 12) and model.provenance.model.mean == [0.3]
    with pytest.raises(harden.UsageError, match="set when a model is built"):
        harden.apply(model, ["stride-mod"], mean=[0.1])


def test_random_weights_are_recorded_and_said(tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    assert _cli("apply", "cifar:wrn-10-1", "--num-classes", 10, "-o", out).exit_code == 0
    res = _cli("inspect", out)
    assert "weights: random" in res.output and "normalization: CIFAR-10 (mean 0.4914" in res.output
    res = _cli("evaluate", out, "--data", "sample", "-n", 4, "--random-subset", "--attack", "fgsm", "-q")
    assert res.exit_code == 0 and res.output.startswith("warning: evaluating cifar:wrn-10-1 with random weights")


def test_pretrained_offline_fails_at_once_and_leaves_the_hub_settings_as_they_were(monkeypatch) -> None:
    import timm
    from huggingface_hub import constants

    from harden.sources import library as library_sources

    seen = []

    def create_model(*args, **kwargs):
        seen.append(constants.HF_HUB_OFFLINE)
        raise OSError("We have no connection or you passed local_files_only")

    monkeypatch.setattr(library_sources, "hub_reachable", lambda *a, **k: False)
    monkeypatch.setattr(timm, "create_model", create_model)
    before = constants.HF_HUB_OFFLINE
    t0 = time.perf_counter()
    res = _cli("apply", "resnet18", "--pretrained", "--input-size", 32)
    _one_error_line(res, 1, "could not fetch pretrained weights for timm:resnet18")
    assert time.perf_counter() - t0 < 15 and seen == [True] and constants.HF_HUB_OFFLINE == before


def test_bad_data_and_eps_are_found_before_the_model_is_built(monkeypatch, tmp_path: Path) -> None:
    import harden.cli.finetune as cli_finetune

    def never(*args, **kwargs):
        raise AssertionError("the model was built before the settings were checked")

    monkeypatch.setattr(cli_finetune, "resolve_model", never)
    out = tmp_path / "o.safetensors"
    _one_error_line(_cli("finetune", "resnet18", "--data", "imagefolder:/no/such/dir", "-o", out), 2, "does not exist")
    _one_error_line(_cli("finetune", "resnet18", "--data", "sample", "--eps", "0", "-o", out), 2, "--eps must be in")
    assert not out.exists()


def test_a_pickled_whole_model_as_weights_is_one_clean_line(tmp_path: Path) -> None:
    path = tmp_path / "whole.pt"
    torch.save(nn.Linear(2, 2), path)
    res = _cli("evaluate", "cifar:wrn-10-1", "--weights", path, "--data", "sample", "-n", 4)
    _one_error_line(res, 1, "holds pickled Python objects (a whole model?)")
    assert "\x1b" not in res.output and "torch.save(model.state_dict(), path)" in res.output
