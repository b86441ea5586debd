"""The settings of ``harden apply``: :class:`ApplyConfig`, the transforms to apply and where the result goes.

The transforms' own options (``--upsample``, ``--stride-mod``, ...) are not fields here: each transform
declares them (:class:`harden.transforms.Shorthand`), and ``harden apply`` adds them before ``-t``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harden.errors import UsageError
from harden.schemas.fields import check_names, flag, text, texts


@dataclass(frozen=True)
class ApplyConfig:
    """Transforms applied in order (after those the shorthand options name) and the file written."""

    transforms: tuple[str, ...] = texts(flags=("-t", "--transform"), metavar="NAME[:k=v,...]", yaml=False,
                                        help="Any registered transform; repeatable, applied in order after the "
                                             "options above.")
    output: str | None = text(path="file", flags=("-o", "--output"), yaml=False,
                              help="Write a harden safetensors file.")
    force: bool = flag(yaml=False, help="Overwrite an existing output file.")


def make_apply_config(**options: Any) -> ApplyConfig:
    """A checked :class:`ApplyConfig`: an existing output needs ``force``."""
    check_names(ApplyConfig, options, "apply setting")
    cfg = ApplyConfig(**{**options, "transforms": tuple(options.get("transforms", ()))})
    if cfg.output and not cfg.force and Path(cfg.output).exists():
        raise UsageError(f"'{cfg.output}' exists; pass --force to overwrite it")
    return cfg
