"""`harden apply`, `inspect` and `list` from the command line: output, exit statuses, atomic files."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from harden.cli import main

TINY = ["tests.user_models:tiny_resnet", "--input-size", "16"]


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_apply_prints_points_changes_and_the_table(tmp_path) -> None:
    out = tmp_path / "m.safetensors"
    res = run("apply", "tv:resnet18", "--num-classes", "10", "--input-size", "32", "--upsample", "2",
              "--stride-mod", "-o", str(out))
    assert res.exit_code == 0, res.output
    assert "layer2.0.downsample.0: stride 2 -> 1" in res.output
    assert "feature map before pooling" in res.output and "4x4" in res.output
    assert "parameters" in res.output and "MACs" in res.output
    assert out.exists()
    res = run("inspect", str(out))
    assert res.exit_code == 0 and "stride-mod" in res.output and "upsample:factor=2" in res.output


def test_list_shows_transforms_with_their_package_and_sources() -> None:
    res = run("list")
    assert res.exit_code == 0
    for name in ("upsample", "stride-mod", "strides", "[harden]", "timm:", "tv:"):
        assert name in res.output


@pytest.mark.parametrize("args, code, text", [
    (["apply", "resnet18x"], 2, "did you mean"),
    (["apply", *TINY, "-t", "upsampel"], 2, "unknown transform 'upsampel'; did you mean: upsample"),
    (["apply", *TINY, "--upsample", "0"], 2, "factor"),
    (["apply", *TINY, "--strides", "12x"], 2, "strides"),
    (["apply", *TINY, "-t", "upsample:factor"], 2, "key=value"),
    (["apply", *TINY, "--weights", "missing.pt"], 2, "does not exist"),
    (["apply", "timm:vit_tiny_patch16_224", "--input-size", "32", "--stride-mod"], 1, "no downsampling point"),
    (["inspect", "missing.safetensors"], 2, "does not exist"),
])
def test_bad_input_is_one_line_with_the_right_status(args, code, text) -> None:
    res = run(*args)
    assert res.exit_code == code, res.output
    assert text in res.output
    assert "Traceback" not in res.output
    assert len([line for line in res.output.splitlines() if line.startswith("error:")]) == 1


def test_debug_shows_the_traceback() -> None:
    res = run("--debug", "apply", *TINY, "--upsample", "0")
    assert res.exit_code != 0 and res.exception is not None


def test_existing_output_is_not_clobbered(tmp_path) -> None:
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"precious")
    res = run("apply", *TINY, "--upsample", "2", "-o", str(out))
    assert res.exit_code == 2 and "--force" in res.output
    assert out.read_bytes() == b"precious"
    res = run("apply", *TINY, "--strides", "9x", "-o", str(out), "--force")
    assert res.exit_code == 2 and out.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_inspect_rejects_torch_checkpoints_and_truncated_files(tmp_path) -> None:
    import torch

    torch.save({"a": torch.zeros(1)}, tmp_path / "m.pt")
    res = run("inspect", str(tmp_path / "m.pt"))
    assert res.exit_code == 2 and "--weights" in res.output
    out = tmp_path / "m.safetensors"
    assert run("apply", *TINY, "-o", str(out)).exit_code == 0
    out.write_bytes(out.read_bytes()[:100])
    res = run("inspect", str(out))
    assert res.exit_code == 1 and "truncated" in res.output


def test_apply_on_a_harden_file_appends_transforms(tmp_path) -> None:
    first, second = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert run("apply", *TINY, "--upsample", "2", "-o", str(first)).exit_code == 0
    res = run("apply", str(first), "--trust-code", "--stride-mod", "-o", str(second))
    assert res.exit_code == 0, res.output
    res = run("inspect", "--json", str(second))
    assert '"upsample"' in res.output and '"stride-mod"' in res.output
