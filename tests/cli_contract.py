"""The command-line contract every hostile-input test checks: success, or one ``error:`` line with exit 1/2."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner, Result

from harden.cli import main


def run_cli(args: list[str]) -> Result:
    """``harden ARGS`` in this process, stdout and stderr kept apart."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)


def assert_calm(result: Result, *, allowed: tuple[int, ...] = (0, 1, 2)) -> None:
    """Success, or exit 1/2 with exactly one ``error:`` line on stderr; never an escaped exception."""
    exc = result.exception
    if exc is not None and not isinstance(exc, SystemExit):
        raise AssertionError(f"escaped {type(exc).__name__}: {exc}") from exc
    assert result.exit_code in allowed, (result.exit_code, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    if result.exit_code:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr


def stray_files(folder: Path) -> list[str]:
    """Temporary files left in ``folder`` (atomic writes use ``.NAME.*.tmp``)."""
    return sorted(p.name for p in folder.rglob("*.tmp"))
