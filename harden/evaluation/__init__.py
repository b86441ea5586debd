"""Robustness evaluation: AutoAttack through the official ``pyautoattack`` code, and quick attacks.

:func:`evaluate` runs the attacks of a plan one after the other on the examples each earlier attack
left correctly classified, exactly as ``AutoAttack.run_standard_evaluation`` does: for every attack
the still-robust examples are taken in order and cut into batches of ``batch_size``, and each batch
goes through the official attack object (which re-seeds itself on every call). Driving the loop
here, rather than inside one call, is what makes the rest possible without changing a single
number: progress is saved after every batch (``resume``), batches are dealt out to the ranks of a
``torchrun`` job and the outcomes reduced, and the report records robust accuracy after each attack
and the attack that broke each example.

Modules:

- :mod:`~harden.evaluation.api`: :func:`check_settings` and :func:`evaluate` (loading the model, starting the
  session).
- :mod:`~harden.evaluation.measure`: one evaluation of a loaded model, from its examples to its report.
- :mod:`~harden.evaluation.attack_plan`: the attack request checked and expanded into an :class:`AttackPlan`.
- :mod:`~harden.evaluation.eps`: eps as users write it (``8/255``) and eps sweeps.
- :mod:`~harden.evaluation.examples`: the examples attacked, chosen from data or tensors.
- :mod:`~harden.evaluation.batch_size`: ``--batch-size auto``.
- :mod:`~harden.evaluation.attack_stages`: the clean pass and each attack, batch by batch, over the ranks.
- :mod:`~harden.evaluation.autoattack`: the adapter to ``pyautoattack``.
- :mod:`~harden.evaluation.checking`: the checks before and after the attacks.
- :mod:`~harden.evaluation.honesty_checks`: the checks themselves, and the log of the warnings they raise.
- :mod:`~harden.evaluation.progress`: each example's status and the ``--resume`` progress file.
- :mod:`~harden.evaluation.sweep`: ``--eps-sweep``.
- :mod:`~harden.evaluation.report`: the report of a finished run.
- :mod:`~harden.evaluation.report_types`: the typed report, :class:`EvaluationReport`, and its JSON form.
- :mod:`~harden.evaluation.tables`: the summary and eps-sweep tables ``harden evaluate`` prints.
- :mod:`~harden.evaluation.plot`: the eps-sweep plot.
- :mod:`~harden.evaluation.corruption_eval`: ``threat="corruptions"``, accuracy under the 15 common
  corruptions, generated (:mod:`~harden.evaluation.corruptions`, :mod:`~harden.evaluation.corruption_ops`)
  or read from a CIFAR-10-C folder (:mod:`~harden.evaluation.corruption_folder`); its report and table
  (:mod:`~harden.evaluation.corruption_report`).
- :mod:`~harden.evaluation.report_card`: :func:`report_card`, several threats in one call written as a card
  (``card.json``, ``card.md``; pictures :mod:`~harden.evaluation.card_pages`, comparison
  :mod:`~harden.evaluation.card_compare`).
"""

from harden.evaluation.api import check_settings, evaluate
from harden.evaluation.attack_plan import (
    AUTOATTACK_STAGES,
    DEFAULT_STEPS,
    AttackPlan,
    plan_attack,
)
from harden.evaluation.batch_size import CPU_BATCH, largest_fitting, pick_batch_size
from harden.evaluation.eps import eps_text, parse_eps, parse_eps_list
from harden.evaluation.examples import PRELOAD_LIMIT, Examples, select_examples
from harden.evaluation.plot import plot_sweep
from harden.evaluation.progress import (
    MISCLASSIFIED,
    PENDING,
    PROGRESS_FORMAT,
    ROBUST,
    Interrupted,
    progress_store,
)
from harden.evaluation.report_card import report_card
from harden.evaluation.report_types import (
    REPORT_FORMAT,
    AttackRow,
    EvaluationReport,
    ExampleOutcomes,
    ModelInfo,
    ReportError,
    ReportWarning,
    SweepRow,
)
from harden.evaluation.tables import summary_table, sweep_table

__all__ = [
    "AUTOATTACK_STAGES", "CPU_BATCH", "DEFAULT_STEPS", "MISCLASSIFIED", "PENDING", "PRELOAD_LIMIT",
    "PROGRESS_FORMAT", "REPORT_FORMAT", "ROBUST", "AttackPlan", "AttackRow", "EvaluationReport", "ExampleOutcomes",
    "Examples", "Interrupted", "ModelInfo", "ReportError", "ReportWarning", "SweepRow",
    "check_settings", "eps_text", "evaluate", "largest_fitting", "parse_eps", "parse_eps_list",
    "pick_batch_size", "plan_attack", "plot_sweep", "progress_store", "report_card", "select_examples",
    "summary_table",
    "sweep_table",
]
