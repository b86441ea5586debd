"""Options shared by several commands: how a MODEL argument becomes a model, and options from a schema."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

import harden
from harden.errors import UsageError
from harden.schemas.fields import Setting, settings_of

if TYPE_CHECKING:
    from harden.model import HardenedModel


def _floats(text: str | None, what: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    from harden.transforms import parse_number

    try:
        return tuple(parse_number(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"{what} must be comma-separated numbers, got '{text}'") from None


def model_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Options describing how to build a model from a spec (ignored for harden files)."""
    options = [
        click.option("--num-classes", type=int, default=None, help="Number of classes of the classifier head."),
        click.option("--input-size", default=None, metavar="N|HxW|CxHxW",
                     help="Input size: a side (32), HxW (64x48) or CxHxW (1x28x28 for grayscale)."),
        click.option("--weights", type=click.Path(dir_okay=False), default=None,
                     help="State dict for the base model (.safetensors, .pt, .pth)."),
        click.option("--pretrained", is_flag=True, help="Use the library's own pretrained weights (needs network)."),
        click.option("--mean", default=None,
                     help="Input normalization mean, one value per channel (0.4914,0.4822,0.4465; 0.5 for grayscale)."),
        click.option("--std", default=None, help="Input normalization std, one value per channel."),
        click.option("--trust-code", is_flag=True,
                     help="Allow a harden file whose recipe names a user factory (package.module:factory)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


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


def resolve_model(model: str, *, num_classes: int | None = None, input_size: str | int | None = None,
                  weights: str | None = None, pretrained: bool = False, mean: str | None = None,
                  std: str | None = None, trust_code: bool = False, init_seed: int = 0, **_: Any) -> HardenedModel:
    """A MODEL argument is a harden safetensors file or any model spec (``--weights`` for its state).

    A spec's random initialisation is seeded with ``init_seed``, so that two commands given the same
    spec start from the same weights (and an interrupted fine-tuning can be resumed)."""
    if model.endswith((".pt", ".pth")):
        raise UsageError(f"'{model}' is a torch checkpoint, not a harden file; pass the architecture as MODEL "
                         f"and the file with --weights {model}")
    if model.endswith(".safetensors") or Path(model).is_file():
        if weights or pretrained:
            raise UsageError("--weights/--pretrained apply to a model spec, not to a harden file")
        return harden.load(model, trust_code=trust_code)
    import torch

    torch.manual_seed(init_seed)
    return harden.load_model(model, num_classes=num_classes, pretrained=pretrained, weights=weights,
                             input_size=input_size, mean=_floats(mean, "--mean"), std=_floats(std, "--std"))


def show_progress(quiet: bool) -> bool:
    """Progress bars go to stderr when it is a terminal (``HARDEN_PROGRESS=1`` forces them, e.g. in logs)."""
    import os
    import sys

    return not quiet and (sys.stderr.isatty() or os.environ.get("HARDEN_PROGRESS") == "1")
