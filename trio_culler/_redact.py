"""Removing the API token from any text before it is shown: log lines, error messages, reports.

A real hub token is long (32 hex digits or more) and is replaced wherever it appears, even inside other text.
A short one (a test or demo value such as ``x``) is replaced only where it stands as a whole word: replacing
every ``x`` would turn ``--max-age`` into ``--ma[redacted]-age`` and make the logs unreadable, while a token
that short protects nothing anyway.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

__all__ = ["REDACTED", "make_redactor"]

REDACTED = "[redacted]"
#: Tokens at least this long are replaced everywhere; shorter ones only as whole words.
ANYWHERE_FROM = 16


def make_redactor(secrets: Iterable[str]) -> Callable[[str], str]:
    """A function that replaces every occurrence of each secret in a text with ``[redacted]``."""
    alternatives = []
    for secret in sorted({s.strip() for s in secrets if s and s.strip()}, key=len, reverse=True):
        escaped = re.escape(secret)
        alternatives.append(escaped if len(secret) >= ANYWHERE_FROM else rf"(?<![\w-]){escaped}(?![\w-])")
    if not alternatives:
        return lambda text: text
    pattern = re.compile("|".join(alternatives))
    return lambda text: pattern.sub(REDACTED, text)
