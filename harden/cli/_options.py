"""Options shared by several commands: how a MODEL argument becomes a model, and options from a schema."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from harden.schemas.fields import Setting, settings_of

if TYPE_CHECKING:
    from harden.model import HardenedModel


def model_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options describing how to build a model from a spec (its schema, :class:`ModelSpec`), and
    ``--trust-code`` (ignored for harden files, except --trust-code)."""
    from harden.schemas.model import ModelSpec

    fn = click.option("--trust-code", is_flag=True,
                      help="Allow a harden file whose recipe names a user factory (package.module:factory).")(fn)
    return schema_options(ModelSpec)(fn)


class RegistryChoice(click.Choice):
    """A choice among a registry's names, read each time (methods registered or installed later count)."""

    def __init__(self, names: Callable[[], Sequence[str]]) -> None:
        self._names = names
        super().__init__([])

    @property  # type: ignore[override]
    def choices(self) -> tuple[str, ...]:
        return tuple(self._names())

    @choices.setter
    def choices(self, value: Any) -> None:  # click's __init__ sets it; the registry is the truth
        pass


def _option(name: str, default: Any, setting: Setting) -> Callable[[Any], Any]:
    """The click option of one schema field (see :class:`harden.schemas.fields.Setting`)."""
    dashed = f"--{name.replace('_', '-')}"
    decls = [*(setting.flags or (dashed,)), name]
    kw: dict[str, Any] = {"help": setting.help or None, "metavar": setting.metavar, "required": setting.required}
    if setting.kind == "bool":
        if default is None:  # on, off or unset: both spellings
            decls[0] = f"{dashed}/--no-{dashed[2:]}"
        else:
            kw["is_flag"] = True
        if default:
            decls[0], kw["flag_value"] = f"--no-{dashed[2:]}", False
        return click.option(*decls, default=default, **kw)
    if setting.kind == "list[str]":
        return click.option(*decls, multiple=True, **kw)
    if setting.registry is not None and not setting.cli_text:
        kw["type"] = RegistryChoice(setting.choice_names)
    elif setting.choice_names() and not setting.cli_text:
        kw["type"] = click.Choice(list(setting.choice_names()))
    elif setting.path is not None:
        kw["type"] = click.Path(dir_okay=setting.path == "folder", file_okay=setting.path == "file")
    elif setting.kind == "int" and not setting.cli_text:
        kw["type"] = int
    shown = setting.default_text if setting.default_text is not None else default
    if shown is not None and setting.cli_text:
        shown = str(shown)  # the command hands the text over; the library reads it
    return click.option(*decls, default=shown, show_default=shown is not None, **kw)


def schema_options(schema: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator adding the command line options of ``schema``'s fields, in their declared order."""
    options = [_option(name, f.default, setting) for name, (f, setting) in settings_of(schema).items()
               if setting.cli]

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


def is_model_file(model: str) -> bool:
    return Path(model).suffix in (".safetensors", ".pt", ".pth") or Path(model).is_file()


def resolve_model(model: str, *, trust_code: bool = False, init_seed: int = 0, **options: Any) -> HardenedModel:
    """A MODEL argument is a harden safetensors file or any model spec (``--weights`` for its state).

    A spec's random initialisation is seeded with ``init_seed``, so that two commands given the same
    spec start from the same weights (and an interrupted fine-tuning can be resumed)."""
    from harden.schemas.model import ModelSpec

    return ModelSpec.of({**options, "spec": model, "seed": init_seed}).build(trust_code=trust_code, isolate_rng=False)


def show_progress(quiet: bool) -> bool:
    """Progress bars go to stderr when it is a terminal (``HARDEN_PROGRESS=1`` forces them, e.g. in logs)."""
    import os
    import sys

    return not quiet and (sys.stderr.isatty() or os.environ.get("HARDEN_PROGRESS") == "1")
