"""How a base model is built: :class:`ModelSpec`, the one place its options live.

Its fields are the model options of every command (``--num-classes``, ``--input-size``, ``--weights``,
``--pretrained``, ``--mean``, ``--std``; the spec is the MODEL argument), the keys of a recipe's ``model:``
section, and the keyword arguments of :func:`harden.load_model`. Like the other schemas it imports
neither torch nor click.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harden.errors import UsageError
from harden.schemas.fields import check_names, flag, integer, parse_number, settings_of, text, value

if TYPE_CHECKING:
    from harden.model import HardenedModel


@dataclass(frozen=True)
class ModelSpec:
    """A base model: its spec and how to build it; a harden file (``.safetensors``) loads as it is."""

    spec: str = text(cli=False, required=True,
                     help="model spec: timm name, tv:NAME, cifar:NAME, package.module:factory")
    num_classes: int | None = integer(help="Number of classes of the classifier head.")
    input_size: str | int | Sequence[int] | None = value(
        "input_size", metavar="N|HxW|CxHxW", cli_text=True,
        help="Input size: a side (32), HxW (64x48) or CxHxW (1x28x28 for grayscale).")
    kwargs: Mapping[str, Any] | None = value(
        "kwargs", cli=False, help="constructor arguments of the model (e.g. in_chans or base_width of a cifar: "
                                  "WRN), plain values only")
    weights: str | None = text(path="file", help="State dict for the base model (.safetensors, .pt, .pth); in a "
                                                 "recipe, relative to the recipe or the cwd.")
    pretrained: bool = flag(help="Use the library's own pretrained weights (needs network).")
    mean: str | Sequence[float] | None = value(
        "list[number]", cli_text=True, help="Input normalization mean, one value per channel (0.4914,0.4822,0.4465; "
                                            "0.5 for grayscale).")
    std: str | Sequence[float] | None = value("list[number]", cli_text=True,
                                              help="Input normalization std, one value per channel.")
    seed: int = integer(0, cli=False, help="seed of the base model's random initialisation (default 0), so that "
                                           "runs and resumed runs start from the same weights")

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> ModelSpec:
        """A spec from keyword values (a recipe's ``model:`` section, the command line's options)."""
        check_names(cls, values, "model setting")
        return cls(**{k: v for k, v in values.items() if v is not None})

    def statistics(self) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
        """``mean`` and ``std`` as numbers (each given as ``"0.5,0.5,0.5"`` text or a list)."""
        return _floats(self.mean, "--mean"), _floats(self.std, "--std")

    def is_file(self) -> bool:
        """Whether the spec names a harden file rather than an architecture."""
        return self.spec.endswith(".safetensors") or Path(self.spec).is_file()

    def build(self, *, trust_code: bool = False, isolate_rng: bool = True) -> HardenedModel:
        """The model: a harden file loaded, or the spec built with its random initialisation seeded by ``seed``,
        without touching the caller's generator (``isolate_rng=False``: the global generator is seeded and
        left where the initialisation leaves it, as the command line does)."""
        if self.spec.endswith((".pt", ".pth")):
            raise UsageError(f"'{self.spec}' is a torch checkpoint, not a harden file; pass the architecture as "
                             f"MODEL and the file with --weights {self.spec}")
        import harden

        if self.is_file():
            if self.weights or self.pretrained:
                raise UsageError("--weights/--pretrained apply to a model spec, not to a harden file")
            return harden.load(self.spec, trust_code=trust_code)
        import torch

        mean, std = self.statistics()
        with torch.random.fork_rng(devices=[], enabled=isolate_rng):
            torch.manual_seed(self.seed)
            return harden.load_model(self.spec, num_classes=self.num_classes, pretrained=self.pretrained,
                                     weights=self.weights, input_size=self.input_size, mean=mean, std=std,
                                     model_kwargs=dict(self.kwargs) if self.kwargs else None)

    def recipe_block(self) -> dict[str, Any] | None:
        """The recipe's ``model:`` section that builds this model again (None for a harden file)."""
        if self.is_file():
            return None
        mean, std = self.statistics()
        block = {**dataclasses.asdict(self), "mean": list(mean) if mean else None, "std": list(std) if std else None,
                 "weights": str(Path(self.weights).resolve()) if self.weights else None,
                 "pretrained": self.pretrained or None}
        return {k: v for k, v in block.items() if k in settings_of(ModelSpec)}


def _floats(given: str | Sequence[float] | None, option: str) -> tuple[float, ...] | None:
    if given is None:
        return None
    try:
        return tuple(parse_number(v) for v in (given.split(",") if isinstance(given, str) else given))
    except (TypeError, ValueError):
        raise UsageError(f"{option} must be comma-separated numbers, got '{given}'") from None

