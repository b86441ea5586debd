"""The provenance of a hardened model: what a harden model file records about how the model was made.

A :class:`Provenance` names the base model (:class:`ModelEntry`), the transforms applied to it in
order (:class:`TransformEntry`), the last adversarial fine-tuning (:class:`FinetuneEntry`, which
keeps the one before it as ``previous``) and, in a file, the library versions that wrote it. It is
stored as JSON in the safetensors metadata (see :mod:`harden.serialization`) and replayed by
:func:`harden.pipeline.rebuild`.

:meth:`Provenance.from_dict` checks every field against its type and raises one
:class:`ProvenanceError` naming the first field that is wrong. It reads the current format and the
one harden 0.1.0 wrote (``harden.recipe/1``, the same fields); keys it does not know are kept in
``extras`` and written back unchanged, so nothing a newer harden recorded is lost in a round trip.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harden.errors import HardenError
from harden.records import OMIT_EMPTY, JsonRecord

FORMAT = "harden.provenance/1"
# formats written by earlier versions that hold the same fields: harden 0.1.0 called the record a recipe
LEGACY_FORMATS = ("harden.recipe/1",)

#: ``ModelEntry.weights`` of a base network built with fresh random weights
RANDOM_WEIGHTS = "random"

_OMIT_EMPTY = OMIT_EMPTY  # field metadata: left out of to_dict() when None or empty


class ProvenanceError(HardenError):
    """A provenance that is not a mapping of the expected fields, or of a format this harden cannot read."""


class UnknownFormatError(ProvenanceError):
    """A provenance whose ``format`` is neither the current one nor a legacy one (a newer harden wrote it)."""


class _Record(JsonRecord):
    """A record of the provenance: a malformed mapping is a :class:`ProvenanceError`."""

    error = ProvenanceError
    what = "provenance"


@dataclass(kw_only=True)
class ModelEntry(_Record):
    """The base model: where it comes from, its classes, input size and normalization."""

    spec: str
    source: str  # "timm", "tv", "cifar", "import", "robustbench", ... or "object" (harden.wrap)
    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    num_classes: int
    input_size: list[int]  # (C, H, W)
    mean: list[float]
    std: list[float]
    pretrained: bool = False
    weights: str | None = None  # the file name of the starting weights, "random", or None (pretrained; old files)

    @property
    def random_weights(self) -> bool:
        """Whether the base network started from random weights (recorded since harden 0.3)."""
        return self.weights == RANDOM_WEIGHTS and not self.pretrained

    @property
    def has_weights_file(self) -> bool:
        """Whether the base network's weights came from a state dict file."""
        return self.weights is not None and self.weights != RANDOM_WEIGHTS


@dataclass(kw_only=True)
class TransformEntry(_Record):
    """One applied transform: its parameters, the state replay needs and what it changed."""

    name: str
    provider: str
    config: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    changes: list[str] = field(default_factory=list)
    #: applied by the model source as part of the model the spec names (a RobustBench MeanSparse entry's
    #: operators), not a change made to that model; replayed like any other
    from_source: bool = field(default=False, metadata=_OMIT_EMPTY)


@dataclass(kw_only=True)
class AwpEntry(_Record):
    """Adversarial weight perturbation as used in fine-tuning."""

    gamma: float
    warmup: int
    paper: str


@dataclass(kw_only=True)
class ExtraDataEntry(_Record):
    """The extra (unlabelled or other) images mixed into each fine-tuning batch."""

    data: str
    n: int
    fraction: float
    per_batch: int
    main_per_batch: int
    labels: str  # "given" or "pseudo"
    teacher: str | None = None  # the pseudo-labelling model, when labels are "pseudo"
    teacher_digest: str | None = None


@dataclass(kw_only=True)
class ValidationEntry(_Record):
    """The held-out check of the kept epoch."""

    n: int
    attack: str
    eps: float
    norm: str
    clean_acc: float | None
    robust_acc: float | None


@dataclass(kw_only=True)
class CollapseEntry(_Record):
    """Catastrophic overfitting found by the guard (harden.training.collapse): where, the figures, what was done."""

    epoch: int
    val_robust: float
    train_acc: float
    best_epoch: int
    best_val_robust: float
    best_train_acc: float
    action: str  # "stop" or "warn"


@dataclass(kw_only=True)
class FinetuneEntry(_Record):
    """An adversarial fine-tuning run: its settings, data, validation and per-epoch history."""

    method: str
    norm: str
    eps: float
    steps: int
    step_size: float
    beta: float | None
    nfgsm_noise: float | None = field(default=None, metadata=_OMIT_EMPTY)  # N-FGSM's noise, in multiples of eps
    awp: AwpEntry | None
    extra_data: ExtraDataEntry | None
    epochs: int
    epochs_run: int
    stopped_early: bool
    kept: str
    kept_epoch: int
    lr: float
    schedule: str
    batch_size: int
    world_size: int
    weight_decay: float
    momentum: float
    ema: float | None
    label_smoothing: float
    eps_warmup: float
    attack_mode: str
    bn_recalibrated_on: int
    augment: bool
    lipschitz_reg: float | None
    precision: str
    seed: int
    data: str
    train_n: int
    skipped_images: int
    validation: ValidationEntry
    history: list[dict[str, Any]]  # one mapping of numbers per epoch
    collapse: CollapseEntry | None = field(default=None, metadata=_OMIT_EMPTY)  # the guard's finding, if any
    seconds: float  # the training's wall-clock; a resumed run adds the time of the epochs it resumed after
    device: str
    previous: FinetuneEntry | None = field(default=None, metadata=_OMIT_EMPTY)  # the fine-tuning before this one


@dataclass(kw_only=True)
class Provenance(_Record):
    """How a hardened model was made: base model, transforms in order, fine-tuning, library versions."""

    format: str = FORMAT  # as read; harden.serialization.save writes FORMAT
    model: ModelEntry
    transforms: list[TransformEntry] = field(default_factory=list)
    finetune: FinetuneEntry | None = field(default=None, metadata=_OMIT_EMPTY)
    versions: dict[str, str] = field(default_factory=dict, metadata=_OMIT_EMPTY)  # package -> version
    #: the weights of a randomly built model were changed by code harden did not see (the user's own training
    #: loop, a ``load_state_dict``) before :func:`harden.save`; harden cannot replay that training
    trained_outside: bool = field(default=False, metadata=_OMIT_EMPTY)

    @property
    def untrained(self) -> bool:
        """Whether the weights are still the random ones the base network was built with, as far as recorded."""
        return self.model.random_weights and self.finetune is None and not self.trained_outside

    @classmethod
    def from_dict(cls, data: Any, where: str = "") -> Provenance:
        """Read a provenance mapping of the current or a legacy format; ProvenanceError if it is not one."""
        fmt = data.get("format") if isinstance(data, Mapping) else FORMAT  # not a mapping: the records say so
        if fmt != FORMAT and fmt not in LEGACY_FORMATS:
            raise UnknownFormatError(f"unknown provenance format {fmt!r}; this harden reads "
                                     f"{', '.join((FORMAT, *LEGACY_FORMATS))} (a newer harden may have written it)")
        return super().from_dict(data, where)

    @classmethod
    def from_json(cls, text: str | bytes) -> Provenance:
        """Parse JSON text written by :meth:`to_json` (or by harden 0.1.0)."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise ProvenanceError(f"provenance is not valid JSON ({str(exc)[:120]})") from None
        try:
            return cls.from_dict(data)
        except RecursionError:
            raise ProvenanceError("provenance is nested too deeply") from None

    def to_json(self) -> str:
        """JSON text with sorted keys, as stored in a model file."""
        return json.dumps(self.to_dict(), sort_keys=True)

    def record_finetune(self, entry: FinetuneEntry) -> None:
        """Make ``entry`` the model's fine-tuning, keeping the one before it as ``entry.previous``."""
        if self.finetune is not None:
            entry.previous = self.finetune
        self.finetune = entry

    def without_versions(self) -> Provenance:
        """A copy without the library versions (what the model is, not which harden wrote it)."""
        return dataclasses.replace(copy.deepcopy(self), versions={})

    def stamped(self, versions: dict[str, str]) -> Provenance:
        """A copy in the current format with the library versions that write it."""
        return dataclasses.replace(copy.deepcopy(self), format=FORMAT, versions=dict(versions))


def weights_text(provenance: Provenance) -> str:
    """Where a model's weights came from, in a few words: ``random``, ``pretrained``, ``FILE``, + fine-tuning."""
    m = provenance.model
    base = "pretrained" if m.pretrained else m.weights or "unrecorded"
    if provenance.trained_outside:
        base += " + trained outside harden"
    return f"{base} + fine-tuned" if provenance.finetune is not None else base
