"""A wheel built from pyproject.toml holds every package of the source tree.

pyproject lists the packages by name (plugins/ installs as ``harden_plugins``), so a new subpackage
that is not listed would work in the editable checkout and be missing from a real install.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")


def _source_packages() -> set[str]:
    found = {"harden_plugins"} if (ROOT / "plugins" / "__init__.py").exists() else set()
    for init in (ROOT / "harden").rglob("__init__.py"):
        if "__pycache__" not in init.parts:
            found.add(".".join(init.parent.relative_to(ROOT).parts))
    return found


def test_pyproject_lists_every_package_of_the_source_tree():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    assert "harden.cli" in _source_packages()  # the walk finds subpackages
    assert listed == _source_packages(), "add the missing packages to [tool.setuptools] packages in pyproject.toml"
