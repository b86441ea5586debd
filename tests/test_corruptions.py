"""--threat corruptions: the 15 common corruptions generated under a seed, the CIFAR-10-C folder reader,
the report and the command line."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import harden
from harden.cli import main
from harden.data import load_dataset
from harden.errors import UsageError
from harden.evaluation.corruption_folder import read_folder
from harden.evaluation.corruptions import (
    CORRUPTIONS,
    FAMILIES,
    corrupt_batch,
    corrupt_image,
    generator_info,
    parse_corruptions,
)
from tests.helpers import one_thread

HAVE_LIBRARY = importlib.util.find_spec("imagecorruptions") is not None
needs_library = pytest.mark.skipif(not HAVE_LIBRARY, reason="imagecorruptions-imaug is not installed "
                                                            "(pip install 'harden[corruptions]'; CI installs it)")
TINY = ["tests.tiny_models:tiny_cnn", "--num-classes", "10", "--input-size", "32"]
NOISE = FAMILIES["noise"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


def _u8(x: torch.Tensor) -> np.ndarray:
    return x.mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()


@pytest.fixture(scope="module")
def cifar() -> np.ndarray:
    """A real 32x32 RGB test image (the bundled CIFAR-10 sample)."""
    return _u8(load_dataset("sample", "test")[0][0])


@pytest.fixture(scope="module")
def fmnist() -> np.ndarray:
    """A real 28x28 grayscale test image (the bundled Fashion-MNIST sample), (H, W)."""
    return _u8(load_dataset("sample:fashion-mnist", "test", image_size=(1, 28, 28))[0][0])[..., 0]


# ------------------------------------------------------------------------------------------- generation


@needs_library
@pytest.mark.parametrize("name", CORRUPTIONS)
def test_every_type_corrupts_32x32_rgb_and_28x28_grayscale(name: str, cifar: np.ndarray, fmnist: np.ndarray) -> None:
    for image in (cifar, fmnist, fmnist[..., None]):
        out = corrupt_image(image, name, 3, seed=0, index=0)
        assert out.shape == image.shape and out.dtype == np.uint8, name
        assert np.abs(out.astype(int) - image.astype(int)).mean() > 0.5, f"{name} left a {image.shape} image as it was"


@needs_library
@pytest.mark.parametrize("name", [*NOISE, "glass_blur", "motion_blur", "snow", "frost", "fog", "elastic_transform"])
def test_deterministic_under_a_seed(name: str, cifar: np.ndarray) -> None:
    state = np.random.get_state()
    first = corrupt_image(cifar, name, 3, seed=7, index=2)
    assert np.array_equal(first, corrupt_image(cifar, name, 3, seed=7, index=2))
    assert not np.array_equal(first, corrupt_image(cifar, name, 3, seed=8, index=2))
    assert not np.array_equal(first, corrupt_image(cifar, name, 3, seed=7, index=3))  # each image its own draw
    assert all(np.array_equal(a, b) for a, b in zip(state, np.random.get_state()))  # the global generator as it was


@needs_library
def test_an_image_gets_the_same_corruption_whatever_runs_beside_it(cifar: np.ndarray) -> None:
    batch = np.stack([cifar, cifar[::-1].copy(), cifar[:, ::-1].copy()])
    whole = corrupt_batch(batch, "gaussian_noise", 2, seed=0, indices=[10, 11, 12])
    alone = corrupt_batch(batch[2:], "gaussian_noise", 2, seed=0, indices=[12])
    assert np.array_equal(whole[2], alone[0])


@needs_library
def test_the_settings_used_are_recorded() -> None:
    small = generator_info(32, 32, ["fog", "jpeg_compression"])
    assert small["library"] == "imagecorruptions-imaug" and small["version"] != "unknown"
    assert small["parameters"] == "cifar10-c" and small["values"]["jpeg_compression"] == [80, 65, 58, 50, 40]
    assert set(small["values"]) == {"fog", "jpeg_compression"}
    assert small["note"] == "generated on the fly, not the published CIFAR-10-C images"
    large = generator_info(96, 96, ["fog"])
    assert large["parameters"] == "imagenet-c" and "values" not in large
    image = np.random.default_rng(0).integers(0, 256, (96, 80, 3), dtype=np.uint8)  # the library's own settings
    out = corrupt_image(image, "impulse_noise", 2, seed=1, index=0)
    assert out.shape == image.shape and np.array_equal(out, corrupt_image(image, "impulse_noise", 2, seed=1, index=0))


def test_types_are_read_from_names_short_names_and_families() -> None:
    assert parse_corruptions(None) == CORRUPTIONS and len(CORRUPTIONS) == 15
    assert parse_corruptions("fog, jpeg,gaussian") == ("gaussian_noise", "fog", "jpeg_compression")
    assert parse_corruptions("noise,weather") == NOISE + FAMILIES["weather"]
    assert parse_corruptions(["elastic"]) == ("elastic_transform",)
    with pytest.raises(UsageError, match="unknown corruption type 'gausian'; did you mean: gaussian"):
        parse_corruptions("gausian")
    with pytest.raises(UsageError, match="severity must be 1 to 5"):
        corrupt_image(np.zeros((32, 32, 3), np.uint8), "fog", 6)


# ------------------------------------------------------------------------------------------ the folder


def _folder(root: Path, names=("gaussian_noise", "fog"), n: int = 5, size: int = 32, repeat_labels: bool = True,
            clean: bool = False) -> Path:
    """A CIFAR-10-C style folder: at severity s, the first 6 - s images white, the rest black; labels all 1."""
    root.mkdir(parents=True, exist_ok=True)
    images = np.zeros((5 * n, size, size, 3), np.uint8)
    for s in range(1, 6):
        images[(s - 1) * n:(s - 1) * n + (6 - s)] = 255
    for name in names:
        np.save(root / f"{name}.npy", images)
    np.save(root / "labels.npy", np.ones(5 * n if repeat_labels else n, np.int64))
    if clean:
        np.save(root / "clean.npy", np.full((n, size, size, 3), 255, np.uint8))
    return root


class Bright(nn.Module):
    """Class 1 for a bright image, 0 for a dark one."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([0.5 - m, m - 0.5], dim=1)


def test_the_folder_reader_takes_the_cifar10c_layout(tmp_path: Path) -> None:
    root = _folder(tmp_path / "c", repeat_labels=False)
    np.save(root / "speckle_noise.npy", np.zeros((25, 32, 32, 3), np.uint8))  # an extra type: left aside
    folder = read_folder(root, CORRUPTIONS, explicit=False)
    assert folder.n == 5 and list(folder.arrays) == ["gaussian_noise", "fog"] and folder.ignored == ["speckle_noise"]
    assert folder.images("fog", 2, [0, 4]).shape == (2, 32, 32, 3)
    assert folder.images("fog", 2, [3, 4]).max(axis=(1, 2, 3)).tolist() == [255, 0]  # severity 2: 4 white


def test_a_folder_is_evaluated_by_type_and_severity(tmp_path: Path) -> None:
    root = _folder(tmp_path / "c", clean=True)
    report = harden.evaluate(Bright(), f"npyc:{root}", threat="corruptions", n=None, device="cpu",
                             report=str(tmp_path / "r.json"))
    assert report["source"] == "folder" and report["generator"] is None and report["clean_acc"] == 100.0
    assert [r["acc"] for r in report["per_severity"]] == [100.0, 80.0, 60.0, 40.0, 20.0]
    assert [r["corruption"] for r in report["per_type"]] == ["gaussian_noise", "fog"]
    fog = report["per_type"][1]
    assert fog["acc"] == 60.0 and fog["correct"] == 15 and fog["total"] == 25
    assert fog["per_severity"][4]["ci95"] == pytest.approx([3.6, 62.4], abs=0.1)  # Wilson, 1 of 5
    assert report["mean_corruption_acc"] == 60.0 and report["examples"]["corrupted"]["fog"][1] == "11110"
    assert [w["name"] for w in report["warnings"]] == ["missing-corruptions"]
    assert json.loads((tmp_path / "r.json").read_text())["per_type"] == report["per_type"]


# ---------------------------------------------------------------------------------------- end to end


def _cli(args: list[str]):
    return CliRunner().invoke(main, args)


@needs_library
def test_cli_on_the_sample(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    args = ["evaluate", *TINY, "--data", "sample", "-n", "8", "--random-subset", "--threat", "corruptions",
            "--corruptions", "gaussian_noise,jpeg", "--seed", "3", "-q", "--device", "cpu"]
    res = _cli([*args, "--report", str(report)])
    assert res.exit_code == 0, res.output
    for text in ("gaussian_noise", "jpeg_compression", "all types", "clean accuracy:", "mean corruption accuracy:",
                 "not the published CIFAR-10-C images", "imagecorruptions-imaug", "CIFAR-10-C's settings"):
        assert text in res.output, text
    data = json.loads(report.read_text())
    assert (data["threat"], data["n"], data["seed"], data["corruptions"]) == \
        ("corruptions", 8, 3, ["gaussian_noise", "jpeg_compression"])
    assert data["generator"]["values"]["gaussian_noise"] == [0.04, 0.06, 0.08, 0.09, 0.1]
    assert len(data["per_type"]) == 2 and all(len(r["per_severity"]) == 5 for r in data["per_type"])
    assert data["clean_ci95"][0] <= data["clean_acc"] <= data["clean_ci95"][1]
    again = _cli([*args, "--json"])
    assert json.loads(again.stdout)["examples"] == data["examples"]  # same seed, same images, same outcomes


@needs_library
def test_library_on_grayscale_28x28() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    report = harden.evaluate(net, "sample:fashion-mnist", threat="corruptions", corruptions="gaussian,contrast", n=4,
                             device="cpu")
    assert report["generator"]["image_size"] == [28, 28] and report["corruptions"] == ["gaussian_noise", "contrast"]
    assert report["clean_acc"] is not None and len(report["examples"]["corrupted"]["contrast"][0]) == 4


def _bad_folders(tmp: Path) -> dict[str, Path]:
    odd = _folder(tmp / "odd")
    np.save(odd / "fog.npy", np.zeros((24, 32, 32, 3), np.uint8))
    floats = _folder(tmp / "floats")
    np.save(floats / "fog.npy", np.zeros((25, 32, 32, 3), np.float32))
    mixed = _folder(tmp / "mixed")
    np.save(mixed / "fog.npy", np.zeros((25, 28, 28, 3), np.uint8))
    labels = _folder(tmp / "labels")
    np.save(labels / "labels.npy", np.ones(7, np.int64))
    unlabelled = _folder(tmp / "unlabelled")
    (unlabelled / "labels.npy").unlink()
    pickled = _folder(tmp / "pickled")
    np.save(pickled / "fog.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return {"ODD": odd, "FLOATS": floats, "MIXED": mixed, "LABELS": labels, "UNLABELLED": unlabelled,
            "PICKLED": pickled}


@pytest.mark.parametrize("args, needle", [
    (["--corruptions", "gausian"], "unknown corruption type 'gausian'; did you mean: gaussian"),
    (["--data", "npyc:ODD"], "holds 24 images, not a multiple of 5"),
    (["--data", "npyc:FLOATS"], "holds float32 25x32x32x3; expected uint8 images"),
    (["--data", "npyc:MIXED"], "holds 25x28x28x3 images but"),
    (["--data", "npyc:LABELS"], "holds 7 labels but each type holds 25 images"),
    (["--data", "npyc:UNLABELLED"], "has no labels.npy"),
    (["--data", "npyc:PICKLED"], "is not a readable .npy array"),
    (["--data", "npyc:ODD", "--corruptions", "snow"], "has no snow.npy"),
    (["--data", "npyc:/no/such/dir"], "does not exist"),
    (["--attack", "pgd"], "--attack applies to --threat adversarial"),
    (["--eps", "4/255"], "--eps applies to --threat adversarial"),
    (["--threat", "corrupt"], "Invalid value for '--threat'"),
    (["--threat", "adversarial", "--corruptions", "fog"], "--corruptions applies to --threat corruptions"),
    (["--threat", "adversarial", "--data", "npyc:ODD"], "evaluate on it with --threat corruptions"),
])
def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, args: list[str], needle: str) -> None:
    bad = _bad_folders(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    for key, path in bad.items():
        args = [a.replace(f"npyc:{key}", f"npyc:{path}") for a in args]
    base = ["evaluate", *TINY, "-n", "4", "-q", "--report", str(out / "r.json")]
    if "--threat" not in args:
        base += ["--threat", "corruptions"]
    if "--data" not in args:
        base += ["--data", "sample"]
    res = _cli(base + args)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], res.output
    assert list(out.iterdir()) == []


def test_without_the_library_generating_stops_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "imagecorruptions", None)  # as if it were not installed
    res = _cli(["evaluate", *TINY, "--data", "sample", "-n", "4", "-q", "--threat", "corruptions",
                "--report", str(tmp_path / "r.json")])
    assert res.exit_code == 2 and res.output.strip().splitlines() == [
        "error: generating corruptions needs the imagecorruptions-imaug package (imagecorruptions is missing): "
        "pip install 'harden[corruptions]'"], res.output
    assert list(tmp_path.iterdir()) == []
    folder = _folder(tmp_path / "c", clean=True)  # a folder needs no generator
    assert harden.evaluate(Bright(), f"npyc:{folder}", threat="corruptions", device="cpu")["clean_acc"] == 100.0
