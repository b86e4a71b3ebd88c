"""The warnings as a pass left them: frozen copies of what the :class:`~._warning_book.WarningBook` holds (the
warnings that still stand, the keeps users asked for, the servers without the notice API), for the status page.

The book is mutable and the passes change it while they run; the page must never read it then (it would see a
pass half-done). So at the end of each pass the service asks the notifier for a :class:`WarningsNow`
(:meth:`~._notify.Notifier.now`) and hands it to the page's history with the pass's report, which publishes it
in the next snapshot. Copying is O(warned + kept) once per pass, within the book's own bound
(``_warning_book.MAX_REMEMBERED`` of each kind): a pass that judged that many servers did far more than this.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

import attrs

from ._records import record_json

__all__ = ["KeptServer", "StandingWarning", "WarningsNow"]


class StandingWarning(NamedTuple):
    """A warning that stands: announced, neither cancelled nor carried out yet. A named tuple, as the judgment's
    ``Verdict``: a pass copies every one (up to the book's bound) for the page, and a frozen attrs class costs
    several times as much to build."""

    user: str
    server: str
    #: The warned server's start: a server started again is another server, whose warning this is not.
    started: datetime | None
    #: The id of the idle stretch, as every event about it carries it.
    id: str
    warned_at: datetime
    #: The time announced: the cull comes at the first pass from then (never sooner), unless the warning is
    #: cancelled first.
    cull_at: datetime
    #: ``idle``, ``kernels_idle``, ``busy_expired`` or ``max_age``.
    reason: str
    #: The latest keep the culler knows its user asked for, for this run of the server (None: none known). A
    #: keep asked for after the warning is read at the cull time, and cancels the warning there: one known
    #: while the warning stands is older than the warning (it started the stretch now warned about).
    kept_at: datetime | None = None
    #: The server's notice API answered 404: the warning reached the operator's hook and URL only.
    no_extension: bool = False

    def to_json(self) -> dict[str, Any]:
        return record_json(self, leave_out=("started",))


class KeptServer(NamedTuple):
    """A server its user asked to keep: the keep counts as activity at ``kept_at`` until the clock its rule
    reads shows later activity, or the server stops."""

    user: str
    server: str
    started: datetime | None
    kept_at: datetime

    def to_json(self) -> dict[str, Any]:
        return record_json(self, leave_out=("started",))


@attrs.frozen(kw_only=True)
class WarningsNow:
    #: Every warning that stands, in the book's order (oldest warned first).
    standing: tuple[StandingWarning, ...] = ()
    #: Every keep the culler remembers, in the book's order (oldest first).
    kept: tuple[KeptServer, ...] = ()
    #: Running servers known to have no notice API (the culler does not ask them again while they run).
    without_extension: int = 0
