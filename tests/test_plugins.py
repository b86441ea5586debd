"""Third-party transforms: found through the `harden.transforms` entry-point group, or registered at run time."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import harden
from harden import transforms as registry

PLUGIN = textwrap.dedent('''
    from torch import nn
    from harden import Applied, Param, Transform

    class Scale(nn.Module):
        def __init__(self, factor):
            super().__init__()
            self.factor = factor
        def forward(self, x):
            return x * self.factor

    class InputScale(Transform):
        """Multiply the input by a constant (a toy transform for tests)."""
        name = "input-scale"
        summary = "multiply the input by a constant"
        params = (Param("factor", float, default=0.5),)

        def apply(self, model):
            model.input_transforms.append(Scale(self.config["factor"]))
            return Applied([f"input x{self.config['factor']}"])
''')


@contextlib.contextmanager
def install_distribution(site: Path, name: str, entry_point: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Lay out an installed distribution `name` declaring one harden.transforms entry point, as pip would,
    put it on sys.path and make harden read the entry points again."""
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[harden.transforms]\n{entry_point}\n")
    monkeypatch.syspath_prepend(str(site))
    with registry.TRANSFORMS.scoped(reload_plugins=True):
        yield


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A minimal installed distribution `harden-toy` providing the `input-scale` transform."""
    (tmp_path / "harden_toy.py").write_text(PLUGIN)
    with install_distribution(tmp_path, "harden-toy", "input-scale = harden_toy:InputScale", monkeypatch):
        yield tmp_path


def test_entry_point_plugin_is_listed_applied_and_replayed(installed_plugin: Path, tmp_path: Path) -> None:
    found = harden.list_transforms()
    assert "input-scale" in found and found["input-scale"].provider == "harden-toy"
    assert {"upsample", "stride-mod", "strides"} <= set(found)
    assert found["upsample"].provider == "harden"
    model = harden.load_model("tests.user_models:tiny_resnet", input_size=16)
    out = harden.apply(model, ["input-scale:factor=0.25"])
    x = torch.rand(2, 3, 16, 16)
    model.eval()
    out.eval()
    assert torch.allclose(out(x), model(x * 0.25))
    harden.save(out, tmp_path / "p.safetensors")
    assert torch.equal(harden.load(tmp_path / "p.safetensors", trust_code=True)(x), out(x))


@pytest.mark.slow
def test_entry_point_plugin_from_the_command_line(installed_plugin: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(installed_plugin), os.getcwd()])}
    cmd = [sys.executable, "-c", "from harden.cli import main; main()"]
    res = subprocess.run([*cmd, "list"], capture_output=True, text=True, env=env, timeout=120)
    assert "input-scale" in res.stdout and "[harden-toy]" in res.stdout
    res = subprocess.run([*cmd, "apply", "tests.user_models:tiny_resnet", "--input-size", "16",
                          "-t", "input-scale:factor=2", "-t", "upsample:factor=2"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "input x2.0" in res.stdout and "16x16 -> 32x32" in res.stdout


def test_register_transform_at_run_time(scoped_transforms: None) -> None:

    @harden.register_transform
    class Negate(harden.Transform):
        name = "negate-input"
        summary = "negate the input"

        def apply(self, model):
            model.input_transforms.append(torch.nn.Identity())
            return harden.Applied(["identity added"])

    assert harden.list_transforms()["negate-input"] is Negate
    out = harden.apply(harden.load_model("tests.user_models:tiny_resnet", input_size=16), [Negate()])
    assert out.provenance.transforms[0].name == "negate-input"
    with pytest.raises(TypeError):
        harden.register_transform(object)  # type: ignore[arg-type]


def test_broken_plugin_warns_instead_of_breaking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with install_distribution(tmp_path, "harden-broken", "broken = no_such_module:Thing", monkeypatch), \
            pytest.warns(UserWarning, match="broken"):
        names = harden.list_transforms()
    assert "upsample" in names and "broken" not in names
