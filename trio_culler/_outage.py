"""A hub that does not answer, as the operator reads it: one line per pass not run, naming the cause once, and
one line when the hub answers again.

A refused connection reaches the culler as an httpx error caused by trio's "all attempts to connect failed",
caused by a group of OSErrors, each saying "Connection refused" in its own words; the hub client keeps all of
them in its message, which is what a traceback or ``--debug`` wants. A pass summary wants the cause once::

    Pass not run: the hub at http://127.0.0.1:8081/hub/api could not be reached: connection refused (6 attempts)
    The hub at http://127.0.0.1:8081/hub/api answers again, after 3 passes not run since 2026-11-25T12:00:00Z
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
from datetime import datetime

from ._errors import HubError, HubStatusError, HubUnavailable, _chain
from ._report import PassReport, count
from ._time import iso_utc

__all__ = ["OutageLog", "cause_in_words", "unreachable"]

log = logging.getLogger("trio_culler")


def cause_in_words(error: HubError) -> str:
    """The one reason ``error`` happened: ``connection refused``, ``no answer within 60 s``, ``HTTP 503: ...``;
    the hub client's whole message, without the request it names, when nothing shorter says it (a TLS failure's
    message carries its advice)."""
    text = str(error)
    if isinstance(error, HubStatusError) and " -> " in text:
        # "GET http://hub/hub/api/ -> 503: message (advice)"
        return "HTTP " + text.partition(" -> ")[2]
    if isinstance(error, HubUnavailable) and error.transient:
        for link in _chain(error):
            if isinstance(link, socket.gaierror):
                return f"cannot resolve the host name ({link.strerror or 'no detail'})"
            if isinstance(link, OSError) and not isinstance(link, ssl.SSLError) and link.errno:
                return os.strerror(link.errno).lower()
    # "GET http://hub/hub/api/: no answer within 60 s": the request is named by the line that quotes this.
    request, separator, rest = text.partition(": ")
    return rest if separator and request.split(" ", 1)[0].isupper() else text


def unreachable(error: HubError, url: str, *, attempts: int) -> str:
    """Why a pass was not run when the probe of the hub at ``url`` failed with ``error`` (after ``attempts``):
    what its summary line says."""
    cause = cause_in_words(error)
    if error.transient:
        tries = f" ({count(attempts, 'attempt')})" if attempts > 1 else ""
        return f"the hub at {url} could not be reached: {cause}{tries}"
    if isinstance(error, HubUnavailable):
        return f"the hub at {url} could not be reached: {cause}"
    return f"the hub at {url} answered what the culler cannot use: {cause}"


class OutageLog:
    """Watches the passes of one culler: while passes are not run because the hub cannot be reached, their
    summaries say so; the first pass whose probe the hub answers again logs one line saying since when."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.down_since: datetime | None = None
        self.passes_not_run = 0

    def observe(self, report: PassReport) -> None:
        if report.outcome == "hub_down":
            if self.down_since is None:
                self.down_since = report.started
            self.passes_not_run += 1
        elif report.hub_up and self.down_since is not None:
            log.info(
                "The hub at %s answers again, after %s not run since %s",
                self.url,
                f"{self.passes_not_run} pass{'' if self.passes_not_run == 1 else 'es'}",
                iso_utc(self.down_since),
                extra={"event": "hub_answers_again", "passes_not_run": self.passes_not_run},
            )
            self.down_since = None
            self.passes_not_run = 0
