"""The result of a Lipschitz bound: per-operation rows, the bound, and their text."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class LipschitzRow:
    """One operation of the network and the bound on its own Lipschitz constant."""

    layer: str
    type: str
    input_size: tuple[int, ...] | None
    norm: float
    note: str = ""


@dataclass
class LipschitzReport:
    """An upper bound on ``||f(x) - f(y)||_2 / ||x - y||_2`` (inputs in [0, 1], logits out) and its parts.

    ``bound`` is ``inf`` when an operation has no global bound (``unsupported`` says which).
    A logit difference ``f_i - f_j`` changes by at most ``margin_bound = sqrt(2) * bound`` per unit
    of input change, so a margin ``m`` is certified for perturbations up to ``m / margin_bound``.
    """

    bound: float
    input_size: tuple[int, ...]
    rows: list[LipschitzRow] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)

    @property
    def margin_bound(self) -> float:
        return math.sqrt(2.0) * self.bound

    def to_dict(self) -> dict[str, Any]:
        return {"bound": self.bound, "margin_bound": self.margin_bound, "input_size": list(self.input_size),
                "unsupported": list(self.unsupported), "rows": [asdict(r) for r in self.rows]}

    def table(self, *, only_nontrivial: bool = False) -> str:
        """The per-layer table as text (``only_nontrivial`` hides rows whose norm is exactly 1)."""
        rows = [r for r in self.rows if not (only_nontrivial and r.norm == 1.0)]
        cells = [("layer", "type", "input size", "norm")]
        for r in rows:
            size = "x".join(map(str, r.input_size)) if r.input_size else "-"
            cells.append((r.layer, r.type + (f" ({r.note})" if r.note else ""), size, format_norm(r.norm)))
        widths = [max(len(c[i]) for c in cells) for i in range(4)]
        lines = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
                 for row in cells]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def summary(self) -> str:
        """One or two lines: the bound (and why it is infinite, if it is)."""
        text = f"Lipschitz upper bound (l2, input {'x'.join(map(str, self.input_size))}): {format_norm(self.bound)}"
        if math.isfinite(self.bound):
            text += f"; logit-margin bound {format_norm(self.margin_bound)}"
        if self.unsupported:
            text += "\nno global bound for: " + "; ".join(self.unsupported[:5])
            if len(self.unsupported) > 5:
                text += f"; ... ({len(self.unsupported)} in all)"
        return text


def format_norm(v: float) -> str:
    """A norm in four significant digits (scientific when very small or large; ``inf`` when unbounded)."""
    if not math.isfinite(v):
        return "inf"
    return f"{v:.4g}" if 1e-3 <= abs(v) < 1e5 or v == 0 else f"{v:.3e}"
