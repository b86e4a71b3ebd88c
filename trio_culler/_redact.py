"""Removing secrets from any text before it is shown: the API token in log lines, error messages and reports;
the secrets a configured URL can hold, wherever it is shown.

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
from urllib.parse import unquote, urlsplit

__all__ = ["REDACTED", "make_redactor", "shown_url", "url_secrets"]

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


def shown_url(url: str, *, keep_path: bool = False) -> str:
    """A configured URL as it may be shown on the status page, in ``api/status`` and in log lines: scheme,
    host and port; never the userinfo, query or fragment, where credentials live (``https://user:pass@...``,
    ``?token=...``), nor, without ``keep_path``, the path, which a webhook's secret often is (a chat service's
    incoming-webhook URL is its own password). ``keep_path`` is for the hub's own URLs, whose path is the
    hub's base URL. A URL that cannot be parsed is shown as ``[redacted]``."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return REDACTED
    if not parts.scheme or not parts.hostname:
        return REDACTED
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    origin = f"{parts.scheme}://{host}" if port is None else f"{parts.scheme}://{host}:{port}"
    return origin + parts.path if keep_path else origin


def url_secrets(url: str) -> list[str]:
    """The password a configured URL holds (as written, and decoded), for a redactor: a URL is logged whole in
    many places (``the hub at ... could not be reached``, ``GET ... -> 500``), and its password is as secret as
    the token. The user name is not a secret."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return []
    if not password:
        return []
    decoded = unquote(password)
    return [password] if decoded == password else [password, decoded]
