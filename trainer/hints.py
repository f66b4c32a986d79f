"""One "did you mean …?" helper for every user-facing name check (config keys, models,
features, data formats, search-space functions, Modal GPUs).

Standard library only, so it can be imported by torch-free code (config validation, tune.py's
search-space language, modal_cluster.py's local entry points).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(word: str, options: Iterable[str], cutoff: float = 0.5) -> str | None:
    """The option nearest to `word` by difflib's ratio, or None below `cutoff`."""
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=cutoff)
    return close[0] if close else None


def did_you_mean(word: str, options: Iterable[str], *, cutoff: float = 0.5, list_valid: bool = False) -> str:
    """Suffix for an error line: "; did you mean 'x'?" when a close option exists.

    With `list_valid`, no close option gives "; valid: a, b, c" instead of "" (for short,
    closed lists such as model or format names).
    """
    options = list(options)
    close = closest(word, options, cutoff)
    if close is not None:
        return f"; did you mean '{close}'?"
    return f"; valid: {', '.join(map(str, options))}" if list_valid else ""
