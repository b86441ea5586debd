"""A search's budgets: ``--budget-macs`` and ``--budget-params`` as absolute amounts, and their text."""

from __future__ import annotations

import math

from harden.errors import UsageError

_UNITS = {"k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}


def parse_budget(text: str | float | int | None, base: int, what: str) -> int | None:
    """``"3x"`` (times the base model's cost), ``"2G"``, ``"20M"``, ``"500K"`` or a number -> an absolute budget.

    A budget below the base model's own cost is an error: not even the base model would fit.
    """
    if text is None:
        return None
    raw = str(text).strip()
    try:
        if raw.lower().endswith("x"):
            value = float(raw[:-1]) * base
        elif raw and raw[-1].lower() in _UNITS:
            value = float(raw[:-1]) * _UNITS[raw[-1].lower()]
        else:
            value = float(raw)
    except ValueError:
        raise UsageError(f"--budget-{what} takes a multiple of the base model (3x) or an amount (2G, 20M, 500K), "
                         f"got '{raw}'") from None
    if not math.isfinite(value) or value < base:
        raise UsageError(f"--budget-{what} {raw} is below the base model's own {base:,} {what}; "
                         f"give at least 1x (or {base:,})")
    return int(value)


def budget_text(budgets: dict[str, int | None]) -> str:
    """``2.00G MACs, 20.00M parameters`` (``none`` without a budget)."""
    from harden.summary import human

    parts = [f"{human(v)} {k.replace('macs', 'MACs').replace('params', 'parameters')}" for k, v in budgets.items()
             if v is not None]
    return ", ".join(parts) or "none"
