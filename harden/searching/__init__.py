"""``harden search``: which of harden's transforms pay for this model and this budget, measured.

:mod:`~harden.searching.space` reads the search space off the model, :mod:`~harden.searching.study`
runs one trial (budget check, proxies, fine-tuning with pruning) inside an Optuna study,
:mod:`~harden.searching.proxies` scores the cheap proxies, :mod:`~harden.searching.outputs` builds the
Pareto front and writes the outputs, and :mod:`~harden.searching.driver` ties them together in
:func:`search`.
"""

from harden.searching.driver import search
from harden.searching.outputs import SearchResult
from harden.searching.space import DIMENSIONS, SearchSpace, build_space

__all__ = ["DIMENSIONS", "SearchResult", "SearchSpace", "build_space", "search"]
