"""Hostile and damaged inputs: each ends in success or one ``error:`` line, and nothing is written or clobbered."""

from __future__ import annotations

import io
import json
import tarfile
from importlib import resources
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import harden
from harden.data import DamagedImage, load_dataset
from tests.cli_contract import assert_calm, run_cli, stray_files

SPEC = "tests.tiny_models:tiny_cnn"
MODEL = [SPEC, "--num-classes", "10", "--input-size", "32"]


def _image_folder(root: Path, per_class: int = 3) -> Path:
    """An ImageFolder test split of ``per_class`` sample images for each of the 10 CIFAR-10 classes."""
    ref = resources.files("harden") / "_sample" / "cifar10-sample.tar.gz"
    with ref.open("rb") as fh, tarfile.open(fileobj=io.BytesIO(fh.read()), mode="r:gz") as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile() and m.name.startswith("test/")),
                         key=lambda m: m.name)
        taken: dict[str, int] = {}
        for m in members:
            cls = Path(m.name).parts[1]
            if taken.get(cls, 0) < per_class:
                taken[cls] = taken.get(cls, 0) + 1
                target = root / m.name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(m).read())  # type: ignore[union-attr]
    return root


@pytest.fixture
def damaged_folder(tmp_path: Path) -> tuple[Path, Path]:
    root = _image_folder(tmp_path / "data")
    bad = sorted((root / "test" / "cat").glob("*.jpg"))[1]
    bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 3])  # a truncated JPEG
    return root, bad


def test_a_truncated_image_is_named_and_nothing_is_written(damaged_folder, tmp_path) -> None:
    root, bad = damaged_folder
    report = tmp_path / "r.json"
    result = run_cli(["evaluate", *MODEL, "--data", f"imagefolder:{root}", "-n", "all", "--attack", "fgsm",
                      "--report", report, "-q"])
    assert_calm(result)
    assert result.exit_code == 2 and bad.name in result.stderr and "--skip-bad-images" in result.stderr
    assert not report.exists() and not stray_files(tmp_path)


def test_skip_bad_images_goes_on_and_counts_them(damaged_folder, tmp_path) -> None:
    root, bad = damaged_folder
    report = tmp_path / "r.json"
    result = run_cli(["evaluate", *MODEL, "--data", f"imagefolder:{root}", "-n", "all", "--attack", "fgsm",
                      "--report", report, "-q", "--skip-bad-images"])
    assert_calm(result, allowed=(0,))
    saved = json.loads(report.read_text())
    assert saved["n"] == 29 and saved["selection"]["skipped_images"] == 1
    assert saved["selection"]["skipped_files"] == [str(bad)]
    assert "skipped 1 damaged images" in result.stdout


def test_dataset_error_names_the_file(damaged_folder) -> None:
    root, bad = damaged_folder
    ds = load_dataset(f"imagefolder:{root}", "test")
    index = [i for i in range(len(ds)) if ds.item_name(i) == str(bad)][0]
    with pytest.raises(DamagedImage, match=bad.name):
        ds[index]
    good, skipped = ds.readable(range(len(ds)))
    assert skipped == [str(bad)] and len(good) == len(ds) - 1


def test_finetune_stops_on_a_damaged_image_or_skips_it(damaged_folder, tmp_path) -> None:
    root, bad = damaged_folder
    out = tmp_path / "m.safetensors"
    args = ["finetune", *MODEL, "--data", f"imagefolder:{root}", "-o", out, "--method", "fgsm-rs", "--epochs", "1",
            "--val-n", "4", "--batch-size", "8", "--quiet"]
    # the ImageFolder has only a test split here: point the training split at it
    (root / "train").symlink_to(root / "test")
    failed = run_cli(args)
    assert_calm(failed)
    assert failed.exit_code == 2 and bad.name in failed.stderr and not out.exists()
    done = run_cli([*args, "--skip-bad-images", "--json"])
    assert_calm(done, allowed=(0,))
    assert json.loads(done.stdout)["skipped_images"] == 1
    assert harden.load(out, trust_code=True).provenance.finetune.train_n == 25  # 30 - 4 held out - 1 damaged


def test_a_yaml_tag_is_one_line_and_runs_nothing(tmp_path) -> None:
    sentinel = tmp_path / "pwned"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: x\nmodel: {{spec: {SPEC}}}\ndata: {{train: sample}}\n"
                      f"evaluate: !!python/object/apply:os.system [\"touch {sentinel}\"]\n")
    result = run_cli(["run", recipe, "--check"])
    assert_calm(result)
    assert result.exit_code == 2 and "line 4" in result.stderr and "not allowed" in result.stderr
    assert not sentinel.exists()


def _tiny_file(path: Path) -> Path:
    model = harden.load_model(SPEC, num_classes=10, input_size=32)
    harden.save(model, path)
    return path


def test_a_model_file_whose_tensors_do_not_fit_its_recipe(tmp_path) -> None:
    path = _tiny_file(tmp_path / "m.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    key = next(k for k in tensors if k.endswith("weight") and tensors[k].dim() == 4)
    tensors[key] = torch.zeros(3, *tensors[key].shape[1:])
    save_file(tensors, str(path), metadata=meta)
    before = path.read_bytes()
    report = tmp_path / "r.json"
    for args in (["evaluate", path, "--trust-code", "--data", "sample", "-n", "2", "--attack", "fgsm",
                  "--report", report],
                 ["apply", path, "--trust-code", "--upsample", "2", "-o", tmp_path / "o.st"]):
        result = run_cli(args)
        assert_calm(result)
        assert result.exit_code == 1 and "does not match its own recipe" in result.stderr and key in result.stderr
    assert path.read_bytes() == before and not (tmp_path / "o.st").exists() and not report.exists()
    assert not stray_files(tmp_path)


@pytest.mark.parametrize("where", ["under-a-file", "read-only"])
def test_an_output_path_that_cannot_be_created(tmp_path, where) -> None:
    if where == "under-a-file":
        (tmp_path / "plain").write_text("x")
        out = tmp_path / "plain" / "sub" / "m.safetensors"
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        out = ro / "m.safetensors"
        probe = ro / "probe"
        try:  # root ignores permission bits: then the case cannot be made
            probe.write_text("")
            probe.unlink()
            pytest.skip("this user can write into read-only folders (root)")
        except PermissionError:
            pass
    result = run_cli(["apply", *MODEL, "--upsample", "2", "-o", out])
    assert_calm(result)
    assert result.exit_code == 2 and "cannot write" in result.stderr and str(out) in result.stderr


def test_a_width_transform_that_cannot_keep_a_shuffle_consistent_says_so(tmp_path) -> None:
    out = tmp_path / "o.safetensors"  # growing a stage would have to invent channels inside a shuffle
    result = run_cli(["apply", "tv:shufflenet_v2_x0_5", "--num-classes", "10", "--input-size", "32",
                      "-t", "stage-widths:widths=1/1/2", "-o", out])
    assert_calm(result)
    assert result.exit_code in (1, 2) and "shuffles or splits its channels" in result.stderr and not out.exists()


@pytest.mark.parametrize("value", ["1e9", "0\r0", "nan"])
def test_values_the_fuzzer_found(tmp_path, value) -> None:
    out = tmp_path / "o.safetensors"
    opt = "--upsample" if value != "nan" else "--last-stage-width"
    result = run_cli(["apply", *MODEL, opt, value, "-o", out])
    assert_calm(result)
    assert result.exit_code == 2 and not out.exists()
