"""Exceptions with a user-facing meaning.

The CLI turns :class:`UsageError` into exit status 2 and :class:`HardenError` into exit status 1,
printing the message as one line (no traceback unless ``--debug``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HardenError(Exception):
    """A failure the user can act on (bad file, transform that cannot apply, ...). Exit status 1."""

    exit_code = 1


class UsageError(HardenError):
    """The user asked for something malformed (unknown name, bad value). Exit status 2."""

    exit_code = 2


def close_matches(word: str, choices: Iterable[str], n: int = 5) -> str:
    """Return ``"; did you mean: a, b?"`` for the closest names in ``choices``, or an empty string."""
    choices = list(choices)
    found = difflib.get_close_matches(word, choices, n=n, cutoff=0.6)
    if not found:
        lowered = word.lower()
        found = [c for c in choices if lowered in c.lower()][:n]
    return f"; did you mean: {', '.join(found)}?" if found else ""
