"""Seeds derived from a run's seed: independent, reproducible random streams for each purpose."""

from __future__ import annotations

import hashlib


def derive_seed(*values: object) -> int:
    """A 63-bit seed from a run's seed and what it is for (epoch, rank, a name): independent streams."""
    h = hashlib.sha256(",".join(str(v) for v in values).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)
