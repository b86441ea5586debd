"""The settings of ``harden scale``: :class:`ScaleConfig`, a RobustScaling request and what to build from it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harden.errors import UsageError
from harden.schemas.fields import check_choices, check_names, flag, integer, text

BLOCKS = ("robust", "basic")


@dataclass(frozen=True)
class ScaleConfig:
    """A FLOP budget scaled by RobustScaling (Huang et al. 2023), and whether to build the network."""

    flops: str | None = text(required=True, metavar="BUDGET", yaml=False,
                             help="Target cost per image in multiply-accumulates (the paper's FLOPs), e.g. 10G.")
    block: str = text("robust", choices=BLOCKS, yaml=False,
                      help="RobustResBlock (RobustResNets) or WRN's pre-activation basic block (WRN-A).")
    num_classes: int = integer(10, yaml=False, help="Classes of the classifier head.")
    input_size: int = integer(32, yaml=False, help="Input side the cost is counted at.")
    build: bool = flag(yaml=False, help="Build the network (fresh weights) and write it with -o.")
    output: str | None = text(path="file", flags=("-o", "--output"), yaml=False, help="Harden file for --build.")
    force: bool = flag(yaml=False, help="Overwrite an existing output file.")


def make_scale_config(**options: Any) -> ScaleConfig:
    """A checked :class:`ScaleConfig`; raises :class:`UsageError` naming the option at fault."""
    check_names(ScaleConfig, options, "scale setting")
    cfg = ScaleConfig(**options)
    check_choices(cfg)
    if cfg.num_classes < 1:
        raise UsageError(f"--num-classes must be positive, got {cfg.num_classes}")
    if cfg.input_size < 1:
        raise UsageError(f"--input-size must be positive, got {cfg.input_size}")
    if cfg.build and not cfg.output:
        raise UsageError("--build needs -o FILE to write the network to")
    if cfg.output and not cfg.build:
        raise UsageError("-o is used with --build; add --build to write the network")
    if cfg.output and Path(cfg.output).exists() and not cfg.force:
        raise UsageError(f"'{cfg.output}' exists; pass --force to overwrite it")
    return cfg
