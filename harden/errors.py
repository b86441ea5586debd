"""Exceptions with a user-facing meaning.

The CLI turns :class:`UsageError` into exit status 2 and :class:`HardenError` into exit status 1,
printing the message as one line (no traceback unless ``--debug``).
"""

from __future__ import annotations

import difflib
import re
import textwrap
from collections.abc import Iterable


class HardenError(Exception):
    """A failure the user can act on (bad file, transform that cannot apply, ...). Exit status 1."""

    exit_code = 1


class UsageError(HardenError):
    """The user asked for something malformed (unknown name, bad value). Exit status 2."""

    exit_code = 2


class HardenWarning(UserWarning):
    """Something the user should know that does not stop the run (random weights, a flat data tree, ...).

    The CLI prints it as one ``warning: ...`` line on stderr; library users see a normal Python warning.
    """


def close_matches(word: str, choices: Iterable[str], n: int = 5) -> str:
    """Return ``"; did you mean: a, b?"`` for the closest names in ``choices``, or an empty string."""
    choices = list(choices)
    found = difflib.get_close_matches(word, choices, n=n, cutoff=0.6)
    if not found:
        lowered = word.lower()
        found = [c for c in choices if lowered in c.lower()][:n]
    return f"; did you mean: {', '.join(found)}?" if found else ""


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def short_reason(exc: BaseException, limit: int = 160) -> str:
    """An exception's message for a one-line error: terminal colour codes removed, its first non-empty line,
    shortened at a word boundary; the exception's type when it has no message."""
    lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return textwrap.shorten(lines[0], width=limit, placeholder=" ...")
