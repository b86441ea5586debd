"""``harden search``: which of harden's transforms pay for this model and this budget, measured.

:mod:`~harden.searching.space` reads the search space off the model, :mod:`~harden.searching.study`
runs one trial (budget check, proxies, fine-tuning with pruning) inside an Optuna study,
:mod:`~harden.searching.proxies` scores the cheap proxies, :mod:`~harden.searching.report` builds the
Pareto front and writes the outputs, and :mod:`~harden.searching.api` ties them together in
:func:`search`.
"""

from harden.searching.api import search
from harden.searching.report import SearchResult
from harden.searching.space import SearchSpace, build_space, dimension_names

__all__ = ["SearchResult", "SearchSpace", "build_space", "dimension_names", "search"]
