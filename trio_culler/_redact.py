"""Removing the API token from any text before it is shown: log lines, error messages, reports.

This is the culler's one redactor. The hub client redacts what it quotes into errors and skipped-user reports
(before cutting it to length), the log formatter every finished line, and the command line its start-up
errors; for the same token they share one compiled redactor.

A real hub token is long (32 hex digits or more) and is replaced wherever it appears, even inside other text.
A short one (a test or demo value such as ``x``) is replaced only where it stands as a whole word: replacing
every ``x`` would turn ``--max-age`` into ``--ma[redacted]-age`` and make the logs unreadable, while a token
that short protects nothing anyway.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable

__all__ = ["REDACTED", "make_redactor"]

REDACTED = "[redacted]"
#: Tokens at least this long are replaced everywhere; shorter ones only as whole words.
ANYWHERE_FROM = 16


def make_redactor(secrets: Iterable[str]) -> Callable[[str], str]:
    """A function that replaces every occurrence of each secret in a text with ``[redacted]``."""
    return _redactor(frozenset(s.strip() for s in secrets if s and s.strip()))


@functools.lru_cache(maxsize=8)
def _redactor(secrets: frozenset[str]) -> Callable[[str], str]:
    alternatives = []
    for secret in sorted(secrets, key=len, reverse=True):
        escaped = re.escape(secret)
        alternatives.append(escaped if len(secret) >= ANYWHERE_FROM else rf"(?<![\w-]){escaped}(?![\w-])")
    if not alternatives:
        return lambda text: text
    pattern = re.compile("|".join(alternatives))
    return lambda text: pattern.sub(REDACTED, text)
