"""The evaluation report as a typed record: :class:`EvaluationReport` and its parts.

An evaluation (``harden.evaluate``, ``harden evaluate --report``) describes what it measured, how,
on which examples and what its checks found in one :class:`EvaluationReport`: the model
(:class:`ModelInfo`), the attack plan and threat, the accuracies with their 95% intervals, the
accuracy after each attack (:class:`AttackRow`), each example's outcome (:class:`ExampleOutcomes`),
the warnings (:class:`ReportWarning`) and, for ``--eps-sweep``, one :class:`SweepRow` per eps.

:meth:`EvaluationReport.to_dict` gives the JSON form (``harden.evaluate/1``) that ``--report`` writes
and ``--into`` stores, key for key as harden wrote it before the report was typed;
:meth:`EvaluationReport.from_dict` reads it back (reports of harden 0.1.0 too), checking each field
against its type (one :class:`ReportError` naming the first field that is wrong). Keys it does not
know are kept in ``extras`` and written back unchanged.

For code written when ``harden.evaluate`` returned a dict, an :class:`EvaluationReport` is also a
read-only :class:`~collections.abc.Mapping` of that dict: ``report["robust_acc"]``,
``report.get("published")``, ``"eps_sweep" in report`` and ``dict(report)`` work as before (values
are plain JSON copies). ``json.dumps`` needs :meth:`~EvaluationReport.to_dict`.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from harden.errors import UsageError
from harden.records import OMIT_EMPTY, OMIT_NONE, JsonRecord, plain

REPORT_FORMAT = "harden.evaluate/1"

_IF_SET = OMIT_NONE   # field metadata: left out of to_dict() when None
_IF_ANY = OMIT_EMPTY  # left out when None or empty, as AttackPlan.describe() leaves it out

P = TypeVar("P", bound="_Part")


class ReportError(UsageError):
    """A mapping that is not an evaluation report of a format this harden reads, or a field of the wrong type."""


class _Part(JsonRecord):
    """A part of the report: a malformed mapping is a :class:`ReportError`."""

    error = ReportError
    what = "report"

    @classmethod
    def from_dict(cls: type[P], data: Any, where: str = "report") -> P:
        """Check ``data`` field by field against the annotations and build the part."""
        return super().from_dict(data, where)


@dataclass(kw_only=True)
class Normalization(_Part):
    """A harden model's input normalization, and the name of well-known statistics (None for others)."""

    mean: list[float]
    std: list[float]
    name: str | None


@dataclass(kw_only=True)
class ModelInfo(_Part):
    """The model a report measured: its spec; for a harden model also its classes, input, transforms and weights."""

    spec: str  # a plain nn.Module: its class name
    num_classes: int | None = field(default=None, metadata=_IF_SET)
    input_size: list[int] | None = field(default=None, metadata=_IF_SET)  # (C, H, W)
    transforms: list[str] | None = field(default=None, metadata=_IF_SET)  # names, in the order applied
    label: str | None = field(default=None, metadata=_IF_SET)  # spec, transforms with settings, fine-tuning
    weights: str | None = field(default=None, metadata=_IF_SET)  # harden.provenance.weights_text
    normalization: Normalization | None = field(default=None, metadata=_IF_SET)

    @property
    def name(self) -> str:
        """The model as a summary names it: its label, or (older reports) its spec and transform names."""
        if self.label:
            return self.label
        return " + ".join([self.spec, *(self.transforms or [])])


@dataclass(kw_only=True)
class AttackRow(_Part):
    """Accuracy after the clean pass (``attack`` "clean") or after one attack stage, and the seconds it took."""

    attack: str
    acc: float
    correct: int
    seconds: float
    attacked: int | None = field(default=None, metadata=_IF_SET)  # examples still robust when the stage began


@dataclass(kw_only=True)
class ExampleOutcomes(_Part):
    """The examples attacked (indices into the data, labels) and each one's outcome."""

    indices: list[int]
    labels: list[int]
    outcome: list[str]  # "misclassified", "robust", the attack stage that broke it, or "pending"
    files: list[str] | None = field(default=None, metadata=_IF_SET)  # for file data: relative to its root


@dataclass(kw_only=True)
class ReportWarning(_Part):
    """A warning raised by one of the checks (``source`` "harden") or by AutoAttack, repeats counted."""

    name: str
    message: str
    source: str = "harden"
    count: int = 1


@dataclass(kw_only=True)
class SweepRow(_Part):
    """Robust accuracy at one eps of ``--eps-sweep``."""

    eps: float
    eps_text: str
    robust_acc: float
    robust_correct: int
    robust_ci95: list[float] | None


@dataclass(kw_only=True)
class EvaluationReport(_Part, Mapping[str, Any]):
    """What an evaluation measured, how and on which examples, and what its checks found (``harden.evaluate/1``).

    The fields are the report's JSON keys, in the order :meth:`to_dict` writes them; those that are
    None (or, for ``version`` and ``deviations``, empty) are left out of the JSON. Reading it as a
    dict (``report["robust_acc"]``) still works: see the module's docstring.
    """

    format: str = REPORT_FORMAT
    kind: str = "robustness"
    model: ModelInfo
    attack: str  # as requested: autoattack, apgd-ce, pgd, ... (a registered attack's name)
    attacks: list[str]  # the stages run, in order (pgd-20, apgd-ce, apgd-t, ...)
    version: str | None = field(default=None, metadata=_IF_ANY)  # AutoAttack's "standard" or "fast"
    steps: int | None = field(default=None, metadata=_IF_SET)
    step_size: float | None = field(default=None, metadata=_IF_SET)
    classes: int | None = field(default=None, metadata=_IF_SET)  # the model's logits
    target_classes: int | None = field(default=None, metadata=_IF_SET)  # of APGD-T and FAB-T
    deviations: list[str] = field(default_factory=list, metadata=_IF_ANY)  # from AutoAttack's standard suite
    norm: str
    threat_model: str  # the norm again, under RobustBench's name
    eps: float
    eps_text: str
    n: int
    seed: int
    batch_size: int
    clean_acc: float  # percent
    robust_acc: float  # percent, after every attack
    clean_correct: int
    robust_correct: int
    clean_ci95: list[float] | None  # Wilson 95% interval, percent
    robust_ci95: list[float] | None
    per_attack: list[AttackRow]  # the clean pass, then each stage
    selection: dict[str, Any]  # the examples chosen: harden.data.Selection.describe(), or the tensors' like it
    examples: ExampleOutcomes | None = field(default=None, metadata=_IF_SET)  # left out of a model file's copy
    seconds: float
    attack_seconds: float
    device: str
    world_size: int
    resumed: bool
    created: str  # ISO 8601, UTC, when the run started
    versions: dict[str, str]  # library -> version
    warnings: list[ReportWarning]
    autoattack_acc: float | None = field(default=None, metadata=_IF_SET)  # standard AutoAttack only
    published: dict[str, Any] | None = field(default=None, metadata=_IF_SET)  # the leaderboard's figures
    strength_check: dict[str, Any] | None = field(default=None, metadata=_IF_SET)
    eps_sweep: list[SweepRow] | None = field(default=None, metadata=_IF_SET)
    robustbench: dict[str, Any]  # the figures in RobustBench's form

    @classmethod
    def from_dict(cls, data: Any, where: str = "report") -> EvaluationReport:
        """Read a report mapping (``harden.evaluate/1``); a ReportError if it is not one."""
        fmt = data.get("format") if isinstance(data, Mapping) else None
        if isinstance(data, Mapping) and fmt != REPORT_FORMAT:
            if fmt is None:
                raise ReportError(f"{where} is not a harden evaluation report (it has no format {REPORT_FORMAT!r})")
            raise ReportError(f"unknown report format {fmt!r}; this harden reads {REPORT_FORMAT} "
                              "(a newer harden may have written it)")
        return super().from_dict(data, where)

    @classmethod
    def of(cls, report: EvaluationReport | Mapping[str, Any]) -> EvaluationReport:
        """``report`` itself, or the report a mapping (a report's JSON) holds."""
        return report if isinstance(report, EvaluationReport) else cls.from_dict(report)

    @property
    def outcome(self) -> list[str]:
        """Each example's outcome; a ReportError for a copy stored without its examples (``--into``)."""
        if self.examples is None:
            raise ReportError("this report has no per-example outcomes (a model file stores it without them)")
        return self.examples.outcome

    def without_examples(self) -> EvaluationReport:
        """A copy without the per-example outcomes: what ``--into`` stores in a model file."""
        return copy.deepcopy(dataclasses.replace(self, examples=None))

    # read-only Mapping over to_dict(), for code written when harden.evaluate returned a dict
    def __getitem__(self, key: str) -> Any:
        for name, value in self.present():
            if name == key:
                return plain(value)
        if key in self.extras:
            return copy.deepcopy(self.extras[key])
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter([name for name, _ in self.present()] + list(self.extras))

    def __len__(self) -> int:
        return len(list(iter(self)))
