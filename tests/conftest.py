"""Shared test set-up: offline, deterministic, small."""

from __future__ import annotations

import os
from collections.abc import Iterator

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _isolated_torch_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # pretrained-weight lookups must never find a developer's cache
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.getbasetemp() / "torch-home"))


# Full-size ImageNet networks make the model sweeps slow on two CPU cores: their cases run in the slow set.
HEAVY_MODELS = ("tv:resnet50", "timm:resnext50_32x4d", "tv:densenet121", "timm:regnety_008", "tv:convnext_tiny",
                "tv:wide_resnet50_2", "tv:efficientnet_b0", "timm:efficientnet_b0", "timm:mobilenetv3_large_100",
                "tv:regnet_y_400mf", "tv:vgg16_bn", "timm:convnext_tiny")


@pytest.fixture
def scoped_transforms() -> Iterator[None]:
    """Transforms registered during the test are unregistered after it."""
    from harden.transforms import TRANSFORMS

    with TRANSFORMS.scoped():
        yield


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if any(f"[{name}" in item.nodeid or f"-{name}" in item.nodeid for name in HEAVY_MODELS):
            item.add_marker(pytest.mark.slow)
