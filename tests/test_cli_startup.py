"""`harden --help`, `--version` and `harden COMMAND --help` start without importing torch (or timm)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harden.cli import main

# Runs `harden ARGS` as `python -m harden.cli` would, then reports which heavy modules got imported.
_PROBE = """
import json, sys
from harden.cli import main
try:
    main(args=sys.argv[1:], prog_name="harden")
except SystemExit as exc:
    code = exc.code or 0
heavy = sorted(m for m in ("torch", "timm", "torchvision", "numpy", "mlflow", "optuna") if m in sys.modules)
print("\\n" + json.dumps({"code": code, "heavy": heavy}))
"""


def _start(args: list[str]) -> tuple[str, dict]:
    done = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    head, _, last = done.stdout.rstrip().rpartition("\n")
    return head, json.loads(last)


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["-h"]])
def test_top_level_starts_without_torch(args: list[str]) -> None:
    out, seen = _start(args)
    assert seen == {"code": 0, "heavy": []}
    assert ("version 0.1.0" in out) if args == ["--version"] else ("finetune" in out and "evaluate" in out)


# `harden apply --help` lists the options the installed transforms declare, so it imports them (and torch)
READS_TRANSFORMS = {"apply"}


@pytest.mark.parametrize("command", sorted(set(main.commands) - READS_TRANSFORMS))
def test_command_help_starts_without_torch(command: str) -> None:
    out, seen = _start([command, "--help"])
    assert seen == {"code": 0, "heavy": []}
    assert f"Usage: harden {command}" in out


def test_apply_help_lists_the_options_each_transform_declares() -> None:
    out, seen = _start(["apply", "--help"])
    assert seen["code"] == 0 and "timm" not in seen["heavy"]
    for option in ("--upsample", "--upsample-mode", "--stride-mod", "--strides", "--activation",
                   "--last-stage-width", "--stage-widths", "--transform"):
        assert option in out
    assert out.index("--stride-mod") < out.index("--upsample ")  # in the order the transforms apply


def test_search_copies_exactly_the_training_options_of_finetune() -> None:
    from harden.cli.search import finetune_options
    from harden.training import CONFIG_FIELDS

    copied = {p.name for p in finetune_options(lambda: None).__click_params__}
    finetune = {p.name for p in main.commands["finetune"].params}
    assert copied == finetune & set(CONFIG_FIELDS)


def test_library_names_still_resolve() -> None:
    import harden

    assert callable(harden.load_model) and callable(harden.finetune) and callable(harden.evaluate)
    assert harden.transforms.parse_number("8/255") == pytest.approx(8 / 255)
    assert sorted(harden.__all__) == sorted(harden._EXPORTS) and set(harden.__all__) <= set(dir(harden))
    with pytest.raises(AttributeError):
        harden.no_such_name  # noqa: B018
