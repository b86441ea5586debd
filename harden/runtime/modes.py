"""Train/eval modes kept across a block: whatever a block sets, every submodule gets its mode back."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


@contextlib.contextmanager
def modes_kept(module: nn.Module) -> Iterator[nn.Module]:
    """Restore the ``training`` flag of ``module`` and of every submodule when the block ends."""
    modes = {m: m.training for m in module.modules()}
    try:
        yield module
    finally:
        for m, training in modes.items():
            m.training = training


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode for the block (batch-norm statistics untouched), modes restored afterwards."""
    with modes_kept(module):
        module.eval()
        yield module
