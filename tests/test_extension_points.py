"""Each extension point is one new file, found through its entry-point group like a pip-installed plugin:
a training method, an attack, a model source, and a transform that declares its own `harden apply`
option and search dimension. Nothing else in harden changes to take them."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import harden
from harden.cli import main
from tests.helpers import installed_distribution

# A training method in one file: FGSM from a zero start with a step of eps (no random start).
METHOD = textwrap.dedent('''
    from harden.attacks import pgd_core
    from harden.methods import TrainingMethod

    class ZeroStartFGSM(TrainingMethod):
        name, label = "fgsm-zero", "FGSM from the clean image, one step of eps"
        fixed_steps = 1

        def step_size(self, eps, steps):
            return eps

        def perturb(self, model, x, y, *, eps, step, steps, norm, generator, options):
            return pgd_core(model, x, y, eps=eps, steps=1, step=step, norm=norm, start="zero")
''')

# An attack in one file: a random corner of the eps ball.
ATTACK = textwrap.dedent('''
    import torch
    from harden.attacks import Attack

    def _corner(model, x, y, *, eps, norm, steps, step_size, generator):
        signs = torch.randint(0, 2, x.shape, generator=generator).to(x) * 2 - 1
        return (x + eps * signs).clamp(0, 1)

    CORNER = Attack("corner", "a random corner of the eps ball (plugin)", run=_corner)
''')

# A model source in one file: `toy:NAME` builds a small CNN of NAME's width.
SOURCE = textwrap.dedent('''
    from torch import nn
    from harden.sources import BuiltNet, ModelSource

    def _build(name, num_classes, pretrained, kwargs):
        width = int(name.removeprefix("toy"))
        net = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                            nn.Linear(width, num_classes or 10))
        return BuiltNet(net, input_size=(3, 16, 16), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))

    TOY = ModelSource("toy", "tiny CNNs toy4, toy8 (plugin)", _build, lambda: ("toy4", "toy8"))
''')

# A transform in one file, with its `harden apply --input-scale S` option and a search dimension.
TRANSFORM = textwrap.dedent('''
    from torch import nn
    from harden.transforms import KEEP, Applied, Param, SearchDimension, Shorthand, Transform

    class Scale(nn.Module):
        def __init__(self, factor):
            super().__init__()
            self.factor = factor

        def forward(self, x):
            return x * self.factor

    class InputScale(Transform):
        name = "input-scale"
        summary = "multiply the input by S"
        params = (Param("factor", float, default=0.5),)
        shorthands = (Shorthand("--input-scale", "factor", "S", "Multiply the input by S.", order=60),)
        search_order = 60
        search_needs_graph = False

        @classmethod
        def search_dimensions(cls, model, traced):
            return [SearchDimension("input-scale", (KEEP, "0.5"), "scale the input")], None

        @classmethod
        def search_spec(cls, params):
            factor = params.get("input-scale", KEEP)
            return None if factor == KEEP else f"input-scale:factor={factor}"

        def apply(self, model):
            model.input_transforms.append(Scale(self.config["factor"]))
            return Applied([f"input x{self.config['factor']}"])
''')


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """One distribution installing a method, an attack, a source and a transform, each from its own file."""
    for module, text in {"hp_method": METHOD, "hp_attack": ATTACK, "hp_source": SOURCE,
                         "hp_transform": TRANSFORM}.items():
        (tmp_path / f"{module}.py").write_text(text)
    entry_points = {"harden.methods": ["fgsm-zero = hp_method:ZeroStartFGSM"],
                    "harden.attacks": ["corner = hp_attack:CORNER"],
                    "harden.sources": ["toy = hp_source:TOY"],
                    "harden.transforms": ["input-scale = hp_transform:InputScale"]}
    with installed_distribution(tmp_path, "harden-extras", entry_points, monkeypatch):
        yield tmp_path


def _data(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_a_method_file_trains_from_the_library_and_is_offered_by_the_command_line(plugin: Path) -> None:
    torch.manual_seed(0)
    model = harden.load_model("toy:toy4")
    out = harden.finetune(model, _data(), method="fgsm-zero", eps=0.03, epochs=1, batch_size=32, val_n=16,
                          progress=False, curves=False)
    assert out.provenance.finetune.method == "fgsm-zero" and out.provenance.finetune.steps == 1
    assert "fgsm-zero" in CliRunner().invoke(main, ["finetune", "--help"]).output


def test_an_attack_file_runs_through_evaluate(plugin: Path) -> None:
    torch.manual_seed(0)
    report = harden.evaluate(harden.load_model("toy:toy4"), _data(), attack="corner", eps=0.03, n=16, batch_size=8,
                             device="cpu")
    assert report["attack"] == "corner" and 0 <= report["robust_acc"] <= report["clean_acc"]
    assert "corner" in CliRunner().invoke(main, ["list"]).output


def test_a_source_file_builds_by_prefix_and_by_bare_name(plugin: Path) -> None:
    assert harden.load_model("toy:toy8").spec == "toy:toy8"
    assert harden.load_model("toy4").provenance.model.source == "toy"  # bare names reach it after timm and tv
    listed = CliRunner().invoke(main, ["list"]).output
    assert "toy:" in listed and "tiny CNNs" in listed


def test_a_transform_file_brings_its_apply_option_and_its_search_dimension(plugin: Path, tmp_path: Path) -> None:
    from harden.searching import build_space, dimension_names

    out = tmp_path / "m.safetensors"
    res = CliRunner().invoke(main, ["apply", "toy:toy4", "--stride-mod", "--input-scale", "0.25", "-o", str(out)])
    assert res.exit_code != 0 and "no downsampling point" in res.output  # its options ordered with the built-ins'
    res = CliRunner().invoke(main, ["apply", "toy:toy4", "--activation", "silu", "--input-scale", "0.25", "-o",
                                    str(out)])
    assert res.exit_code == 0, res.output
    assert [t.name for t in harden.load(out).provenance.transforms] == ["activation", "input-scale"]
    assert "input-scale" in dimension_names()
    space = build_space(harden.load_model("toy:toy4"), "activation,input-scale")
    assert [d.name for d in space.dimensions] == ["activation", "input-scale"]
    assert space.transforms({"activation": "silu", "input-scale": "0.5"}) == ["activation:name=silu",
                                                                              "input-scale:factor=0.5"]
