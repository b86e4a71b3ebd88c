"""The status page's warnings: what they did (since the culler started, and in the last pass), which stand now,
and which servers their users asked to keep; and, for each user's own view, theirs.

:class:`WarningLedger` folds each pass's report in (the :class:`~._history.History` calls it) and gives the
frozen :class:`WarningTally` the snapshot carries, plus an index by user (:class:`UserWarnings`) that only the
user's own view reads. What stands is the notifier's, as the last pass left it (``report.warnings_now``): a
report without it (no warnings configured, or a pass run by an embedder without a notifier) leaves the last one
known in place.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from ._cull_events import EVENTS
from ._records import record_json
from ._report import PassReport
from ._warnings_now import KeptServer, StandingWarning, WarningsNow

__all__ = ["SHOWN", "UserWarnings", "UsersWarnings", "WarningCounts", "WarningLedger", "WarningTally"]

#: Warnings that stand, and keeps, listed on the admin's page (the most recent; all are counted): a summary on a
#: hub where thousands are warned at once, as the next hour's list is.
SHOWN = 50
#: The counts of :class:`WarningCounts` beside the events: the pass report's of the same names.
_COUNTS = ("notices_delivered", "notices_failed", "notices_without_extension", "keeps")


@attrs.frozen(kw_only=True)
class WarningCounts:
    """What the warnings did over some passes."""

    #: Events by kind: ``warning``, ``cancelled``, ``culled``.
    events: Mapping[str, int] = attrs.Factory(lambda: dict.fromkeys(EVENTS, 0))
    #: Notices delivered to servers (PUT and DELETE), failed, and servers whose notice API answered 404.
    notices_delivered: int = 0
    notices_failed: int = 0
    notices_without_extension: int = 0
    #: Warned servers spared because their users asked to keep them.
    keeps: int = 0

    @classmethod
    def of(cls, report: PassReport) -> WarningCounts:
        events = {kind: report.warning_events.get(kind, 0) for kind in EVENTS}
        return cls(events=events, **{name: getattr(report, name) for name in _COUNTS})

    def __add__(self, other: WarningCounts) -> WarningCounts:
        events = {kind: self.events.get(kind, 0) + other.events.get(kind, 0) for kind in EVENTS}
        return WarningCounts(events=events, **{name: getattr(self, name) + getattr(other, name) for name in _COUNTS})

    def to_json(self) -> dict[str, Any]:
        return {
            "events": {kind: self.events.get(kind, 0) for kind in EVENTS},
            "notices": {
                "delivered": self.notices_delivered,
                "failed": self.notices_failed,
                "without_extension": self.notices_without_extension,
            },
            "keeps": self.keeps,
        }


@attrs.frozen(kw_only=True)
class WarningTally:
    """Warnings before a cull, as the page shows them."""

    #: Whether warnings are configured at all (``--warn-before``).
    enabled: bool = False
    #: Delivered, and failed, since the culler started (to the hook and the URL).
    sent: int = 0
    failed: int = 0
    #: Waiting for delivery when the last pass ended.
    pending: int = 0
    #: Servers the last pass that ran kept because their users were warned and the notice runs on.
    waiting: int = 0
    since_start: WarningCounts = WarningCounts()
    last_pass: WarningCounts = WarningCounts()
    #: When the pass that left what stands started (None: none has yet).
    as_of: datetime | None = None
    #: How many warnings stand, and the :data:`SHOWN` most recently given, newest first.
    standing_total: int = 0
    standing: tuple[StandingWarning, ...] = ()
    #: How many keeps the culler remembers, and the :data:`SHOWN` most recent, newest first.
    kept_total: int = 0
    kept: tuple[KeptServer, ...] = ()
    #: Running servers whose notice API answered 404: their warnings reach the hook and the URL only.
    without_extension: int = 0

    def to_json(self) -> dict[str, Any]:
        # Every field, in order (``|`` keeps each key where it is); the counts and the lists hold records of their own.
        return record_json(self) | {
            "since_start": self.since_start.to_json(),
            "last_pass": self.last_pass.to_json(),
            "standing": [warning.to_json() for warning in self.standing],
            "kept": [keep.to_json() for keep in self.kept],
        }


@attrs.frozen
class UserWarnings:
    """One user's warnings that stand and keeps, by server name: what their own view shows."""

    standing: Mapping[str, StandingWarning] = attrs.Factory(dict)
    kept: Mapping[str, KeptServer] = attrs.Factory(dict)


@attrs.frozen
class UsersWarnings:
    """Each user's warnings that stand and keeps, by user name (lists, made into a :class:`UserWarnings` only for
    the user who looks: at the book's bound, one per user would cost a pass as much again as the copy itself)."""

    standing: Mapping[str, list[StandingWarning]] = attrs.Factory(dict)
    kept: Mapping[str, list[KeptServer]] = attrs.Factory(dict)

    @classmethod
    def of(cls, now: WarningsNow) -> UsersWarnings:
        standing: dict[str, list[StandingWarning]] = {}
        for warning in now.standing:
            standing.setdefault(warning.user, []).append(warning)
        kept: dict[str, list[KeptServer]] = {}
        for keep in now.kept:
            kept.setdefault(keep.user, []).append(keep)
        return cls(standing, kept)

    def of_user(self, user: str) -> UserWarnings:
        """``user``'s own, by their exact name: nothing of anyone else's."""
        return UserWarnings(
            {warning.server: warning for warning in self.standing.get(user, ())},
            {keep.server: keep for keep in self.kept.get(user, ())},
        )


class WarningLedger:
    """Folds what each pass's warnings did into the tally, and keeps the last known index by user."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self._sent = 0
        self._failed = 0
        self._since_start = WarningCounts()
        self._now = WarningsNow()
        self._as_of: datetime | None = None
        self._by_user = UsersWarnings()

    def observe(self, report: PassReport, *, waiting: int) -> WarningTally:
        """Fold ``report`` in; ``waiting``: the servers kept for their notice by the last pass that ran."""
        self._sent += report.warnings_sent
        self._failed += report.warnings_failed
        last_pass = WarningCounts.of(report)
        self._since_start += last_pass
        if report.warnings_now is not None:
            self._now = report.warnings_now
            self._as_of = report.started
            self._by_user = UsersWarnings.of(self._now)
        now = self._now
        return WarningTally(
            enabled=self.enabled,
            sent=self._sent,
            failed=self._failed,
            pending=report.warnings_pending,
            waiting=waiting,
            since_start=self._since_start,
            last_pass=last_pass,
            as_of=self._as_of,
            standing=tuple(heapq.nlargest(SHOWN, now.standing, key=lambda warning: warning.warned_at)),
            standing_total=len(now.standing),
            kept=tuple(heapq.nlargest(SHOWN, now.kept, key=lambda keep: keep.kept_at)),
            kept_total=len(now.kept),
            without_extension=now.without_extension,
        )

    @property
    def by_user(self) -> UsersWarnings:
        """Each user's warnings that stand and keeps, as the last pass that told left them (replaced whole)."""
        return self._by_user
