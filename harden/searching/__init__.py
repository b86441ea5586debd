"""``harden search``: which of harden's transforms pay for this model and this budget, measured.

:mod:`~harden.searching.space` reads the search space off the model, :mod:`~harden.searching.objective`
runs one trial (budget check, proxies, fine-tuning with pruning) inside an Optuna study,
:mod:`~harden.searching.proxies` scores the cheap proxies, :mod:`~harden.searching.outputs` builds the
Pareto front and writes the outputs, :mod:`~harden.searching.verdict` confirms the front against the
base, and :mod:`~harden.searching.driver` ties them together in :func:`search`. The study's parts:
:mod:`~harden.searching.budgets` (``--budget-*``), :mod:`~harden.searching.pruners` (``--pruner``),
:mod:`~harden.searching.storage` (opening the Optuna storage, also by several processes at once) and
:mod:`~harden.searching.claims` (which trials hold the ``--trials`` places).
"""

from harden.searching.driver import search
from harden.searching.outputs import SearchResult
from harden.searching.space import SearchSpace, build_space, dimension_names

__all__ = ["SearchResult", "SearchSpace", "build_space", "dimension_names", "search"]
