"""The ``harden`` command line: a thin layer over the library API.

Each command lives in its own module and registers itself on :data:`main`.
"""

from __future__ import annotations

import importlib
import sys
import warnings

import click

from harden.errors import HardenError, HardenWarning

COMMAND_MODULES = ("harden.cli.apply", "harden.cli.evaluate", "harden.cli.finetune", "harden.cli.zoo",
                   "harden.cli.search")


def one_line(message: str) -> str:
    """``message`` on one line: line breaks and other control characters a user's value brought are escaped."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in message)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: object = None, line: str | None = None) -> None:
    """harden's warnings as one ``warning: ...`` line; others as Python prints them."""
    if issubclass(category, HardenWarning):
        click.echo(f"warning: {one_line(str(message))}", err=True)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


class HardenGroup(click.Group):
    """A click group that prints errors as one line and maps them to exit statuses.

    harden's own errors exit 1 (failures) or 2 (usage); click's command-line errors (an unknown
    option, a bad choice) exit 2 with the same one-line form, pointing at the command's --help.
    """

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        debug = bool(ctx.params.get("debug")) or "--debug" in sys.argv
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always", HardenWarning)
                warnings.showwarning = _show_warning
                return super().invoke(ctx)
        except HardenError as exc:
            if debug:
                raise
            click.echo(f"error: {one_line(str(exc))}", err=True)
            ctx.exit(exc.exit_code)
        except click.UsageError as exc:
            if debug:
                raise
            where = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
            click.echo(f"error: {one_line(exc.format_message())} (see '{where} --help')", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            if debug:
                raise
            click.echo("interrupted", err=True)
            ctx.exit(130)


@click.group(cls=HardenGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="harden")
def main(debug: bool) -> None:
    """Make existing image classifiers more robust to adversarial examples."""


for _name in COMMAND_MODULES:
    try:
        importlib.import_module(_name)
    except ModuleNotFoundError as _exc:  # a command module not written yet
        if _exc.name != _name:
            raise
