"""Perturbation sizes as users write them: ``8/255``, ``0.031``, and comma-separated sweeps."""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

from harden.errors import UsageError


def eps_text(value: float) -> str:
    """``8/255`` for multiples of 1/255, else the shortest decimal."""
    k = value * 255
    if value > 0 and abs(k - round(k)) < 1e-6 and round(k) != 255:
        return f"{round(k)}/255"
    return f"{value:g}"


def _read_number(value: str) -> float:
    text = value.strip()
    try:
        if "/" in text:
            num, _, den = text.partition("/")
            return float(Fraction(num.strip()) / Fraction(den.strip()))
        return float(text)
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"eps must be a number or a fraction like 8/255, got '{value}'") from None


def parse_eps(value: str | float, *, norm: str = "Linf", allow_zero: bool = False) -> tuple[float, str]:
    """``"8/255"``, ``"0.031"`` or a number -> ``(value, text)``; refuses eps <= 0 and (for Linf) > 1."""
    if isinstance(value, (int, float)):
        eps, text = float(value), eps_text(float(value))
    else:
        eps, text = _read_number(value), value.strip()
    if not math.isfinite(eps) or eps < 0 or (eps == 0 and not allow_zero):
        raise UsageError(f"eps must be positive, got {text}")
    if norm == "Linf" and eps > 1:
        raise UsageError(f"Linf eps must be at most 1 (images are in [0, 1]); got {text}, did you mean {text}/255?")
    return eps, text


def parse_eps_list(text: str | Sequence[str | float], *, norm: str = "Linf") -> list[tuple[float, str]]:
    """``"0,1/255,2/255"`` -> sorted unique ``(value, text)`` pairs; 0 (clean accuracy) is allowed."""
    parts = [p for p in text.split(",") if p.strip()] if isinstance(text, str) else list(text)
    if not parts:
        raise UsageError("--eps-sweep needs a comma-separated list of eps values, e.g. 0,2/255,4/255,8/255")
    seen: dict[float, str] = {}
    for p in parts:
        v, t = parse_eps(p, norm=norm, allow_zero=True)
        seen.setdefault(v, t)
    return sorted(seen.items())
