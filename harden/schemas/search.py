"""The settings of a search: :class:`SearchConfig`, the schema of ``harden search``.

Its fields are the command's own options (in ``--help`` order) and the keyword arguments of
:func:`harden.search` that shape the study; each trial's fine-tuning takes
:class:`~harden.schemas.finetune.FinetuneConfig`'s settings besides. :func:`make_search_config`
builds and checks one; the command line gives ``timeout`` as a duration such as ``2h``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from harden.errors import UsageError
from harden.schemas.fields import check_choices, check_names, flag, integer, text, texts

PRUNERS = ("halving", "hyperband", "median", "none")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


@dataclass
class SearchConfig:
    """How :func:`harden.search` runs its study; the CLI options use the same names."""

    out: str | None = text(path="folder", required=True, yaml=False,
                           help="Folder for the study (study.db), pareto.json, pareto.png and best.yaml.")
    budget_macs: str | float | None = text(metavar="3x|2G", yaml=False,
                                           help="Most MACs per image: a multiple of the base model's or an amount.")
    budget_params: str | float | None = text(metavar="1.5x|20M", yaml=False,
                                             help="Most parameters: a multiple or an amount.")
    trials: int = integer(20, yaml=False,
                          help="Trials the study holds in all (resumed runs and other processes included).")
    timeout: float | str | None = text(metavar="2h", yaml=False,
                                       help="Stop starting trials after this long (90s, 30m, 2h).")
    storage: str | None = text(metavar="URL", yaml=False,
                               help="SQLAlchemy URL of a shared study (several processes may use it) [default: sqlite "
                                    "in --out].")
    resume: bool = flag(yaml=False, help="Continue the study in --out (or --storage).")
    space: str | None = text(metavar="DIMS", yaml=False,
                             help="Dimensions to search, comma-separated: stage-widths, last-stage-width, strides, "
                                  "activation, upsample, or none [default: all that apply].")
    extra: tuple[str, ...] = texts(flags=("-t", "--transform"), metavar="NAME[:k=v,...]", yaml=False,
                                   help="Also search this transform (any registered one, plugins included) on or off; "
                                        "repeatable.")
    pruner: str = text("halving", choices=PRUNERS, yaml=False,
                       help="How trials that fall behind are stopped (robust accuracy after each epoch).")
    confirm: int = integer(2, yaml=False,
                           help="Front candidates trained again with a second seed and measured on twice the held-out "
                                "images before a winner is named (0: no confirmation, no verdict).")
    recipe_epochs: int | None = integer(yaml=False,
                                        help="Epochs of best.yaml's fine-tuning (its full budget) [default: --epochs].")


def parse_duration(value: str | float | None) -> float | None:
    """``"90s"``, ``"30m"``, ``"2h"``, ``"1d"`` or plain seconds (text or a number) -> seconds."""
    if value is None:
        return None
    if not isinstance(value, str):
        if value <= 0:
            raise UsageError(f"--timeout must be positive, got {value}")
        return float(value)
    m = _DURATION.match(value)
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"--timeout takes a positive duration such as 90s, 30m or 2h, got '{value}'")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def make_search_config(config: SearchConfig | None = None, /, **options: Any) -> SearchConfig:
    """A checked :class:`SearchConfig`: ``config`` (default: harden's defaults) with ``options`` in place of its
    values; raises :class:`UsageError` naming the option at fault."""
    check_names(SearchConfig, options, "search setting")
    cfg = dataclasses.replace(config, **options) if config is not None else SearchConfig(**options)
    cfg.timeout = parse_duration(cfg.timeout)
    cfg.extra = tuple(cfg.extra)
    if not isinstance(cfg.trials, int) or cfg.trials < 1:
        raise UsageError(f"--trials must be at least 1, got {cfg.trials}")
    if cfg.confirm < 0:
        raise UsageError(f"--confirm must be 0 or more (front candidates confirmed with a second seed), "
                         f"got {cfg.confirm}")
    if cfg.recipe_epochs is not None and cfg.recipe_epochs < 1:
        raise UsageError(f"--recipe-epochs must be at least 1, got {cfg.recipe_epochs}")
    check_choices(cfg)
    return cfg
