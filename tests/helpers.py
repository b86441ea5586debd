"""Small helpers shared by the tests."""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn


@contextlib.contextmanager
def installed_distribution(site: Path, name: str, entry_points: dict[str, list[str]],
                           monkeypatch: Any) -> Iterator[None]:
    """Lay out an installed distribution ``name`` declaring ``entry_points`` (group -> ``"name = module:obj"``
    lines) in ``site``, as pip would, put it on sys.path, and let every harden registry read its entry points
    again inside the block (and forget them after it)."""
    from harden.attacks import ATTACKS
    from harden.methods import METHODS
    from harden.sources import SOURCES
    from harden.transforms import TRANSFORMS

    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("".join(f"[{group}]\n" + "\n".join(lines) + "\n"
                                                   for group, lines in entry_points.items()))
    monkeypatch.syspath_prepend(str(site))
    with contextlib.ExitStack() as stack:
        for registry in (TRANSFORMS, ATTACKS, SOURCES, METHODS):
            stack.enter_context(registry.scoped(reload_plugins=True))
        yield


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's logits in eval mode, without gradients."""
    model.eval()
    with torch.no_grad():
        return model(x)


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Every state-dict entry's shape, by key."""
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def train_on_sample(model: nn.Module, *, epochs: int, lr: float) -> nn.Module:
    """Clean Adam training on the bundled sample's train split (shuffled, batches of 100); returns it in eval mode."""
    from harden.data import load_dataset, load_tensors, select

    ds = load_dataset("sample", "train")
    x, y = load_tensors(ds, select(ds, None))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=gen)  # the sample is stored class by class
        for i in range(0, len(y), 100):
            idx = perm[i:i + 100]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


class Stop(Exception):
    """Stands for a run killed part-way."""


def full_and_interrupted(make_model, tmp_path, opts: dict):
    """An uninterrupted fine-tuning of ``make_model()``, and the output path of the same run stopped
    after its first epoch (its checkpoint is there to resume)."""
    import pytest

    from harden.training import finetune

    full = finetune(make_model(), "sample", output=tmp_path / "full.safetensors", **opts)

    def interrupt(info: dict) -> None:
        if info["epoch"] == 1:
            raise Stop

    part = tmp_path / "part.safetensors"
    with pytest.raises(Stop):
        finetune(make_model(), "sample", output=part, callback=interrupt, **opts)
    return full, part


def calibrated(spec: str) -> nn.Module:
    """``spec`` (10 classes, 32x32) whose batch norms have non-trivial running statistics, in eval mode."""
    import harden

    torch.manual_seed(0)
    model = harden.load_model(spec, num_classes=10, input_size=32)
    model.train()
    with torch.no_grad():
        model(torch.rand(16, 3, 32, 32))
    return model.eval()


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread (tiny attacked models are overhead-bound: faster, and deterministic)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def importable_module(folder: Path, name: str, source: str) -> Iterator[Path]:
    """``source`` written as module ``name`` in ``folder`` and importable while the block runs."""
    (folder / f"{name}.py").write_text(source)
    sys.path.insert(0, str(folder))
    try:
        yield folder
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop(name, None)


def robustbench_architectures(names: Sequence[str], stubbed: Sequence[str] = ()) -> types.SimpleNamespace | None:
    """RobustBench's architecture files ``names`` (``model_zoo/architectures/NAME.py`` of its installed wheel),
    imported by path, or None when robustbench is not installed.

    Its package's ``__init__`` needs modules it does not install. Files that import siblings relatively load
    as they are; for those importing ``robustbench.model_zoo.architectures.X`` absolutely, ``stubbed`` names
    the siblings X stood in for by empty modules (their names resolve to None) while the files load.
    """
    import importlib
    import importlib.util

    spec = importlib.util.find_spec("robustbench")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "model_zoo" / "architectures"
    alias, absolute = "_rb_arch_ref", "robustbench.model_zoo.architectures"
    packages = {alias: folder, "robustbench": None, "robustbench.model_zoo": None, absolute: folder}
    added = [name for name in [*packages, *(f"{absolute}.{s}" for s in stubbed)] if name not in sys.modules]
    for name in added:
        module = types.ModuleType(name)
        if packages.get(name) is not None:
            module.__path__ = [str(packages[name])]  # type: ignore[attr-defined]
        elif name not in packages:
            module.__getattr__ = lambda attr: None  # type: ignore[method-assign]
        sys.modules[name] = module
    try:
        return types.SimpleNamespace(**{name: importlib.import_module(f"{alias}.{name}") for name in names})
    finally:
        for name in [m for m in sys.modules if m.startswith(f"{alias}.")] + added:
            del sys.modules[name]


BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def import_benchmark(name: str) -> types.ModuleType:
    """Import ``benchmarks/NAME.py`` (the scripts import each other by bare name, as they run)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


def randomise_batchnorm(net: torch.nn.Module, generator: torch.Generator) -> None:
    """Random running statistics and affine weights for every BatchNorm2d (non-trivial logits in equality tests)."""
    import torch

    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=generator) - 0.5)
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=generator))
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=generator))
                m.bias.copy_(0.2 * torch.randn(m.num_features, generator=generator))
