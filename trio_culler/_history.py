"""What the status page shows, kept bounded: the last passes, the last culls, and what comes next; and, for the
page's user view, each user's own (:class:`~._user_record.UserRecord`, :attr:`History.users`).

:class:`History` is a pass reporter (``Culler(reporters=[history.observe])``). Each finished pass replaces
:attr:`History.snapshot`, a frozen value, in one assignment: the web server only ever reads whole snapshots,
and a pass never waits for, or on, a reader. Memory is ``size`` pass summaries plus ``size`` culls plus one
pass's forecast (at most :data:`~._report.MAX_UPCOMING_KEPT`), plus the user record's own bounds, whatever the
number of users on the hub.

It shows only what is so: a cull whose stop the hub answered 202 is ``pending`` until a later pass saw the stop
done (:attr:`~._report.PassReport.stops_confirmed`), then ``stopped``; what comes next is ``unknown`` (with why)
where the culler cannot foresee it; a culler whose configuration cannot be used says so
(:meth:`History.config_error`), and nothing else.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from ._forecast import DEFAULT_HORIZON, Forecast
from ._records import record_json
from ._redact import shown_url
from ._report import CullRecord, PassError, PassReport
from ._time import iso_utc, seconds
from ._user_record import UserRecord
from ._warning_tally import UsersWarnings, UserWarnings, WarningLedger, WarningTally

__all__ = ["DEFAULT_HISTORY", "History", "PassSummary", "StatusSnapshot", "WarningTally"]

#: Passes and culls kept by default (``--status-history``).
DEFAULT_HISTORY = 100
#: Errors of the last pass shown verbatim (all are counted).
ERRORS_SHOWN = 20


@attrs.frozen(kw_only=True)
class PassSummary:
    """One finished pass, without its per-user records."""

    started: datetime
    duration: float
    hub_version: str | None
    dry_run: bool
    users_seen: int
    servers_seen: int
    servers_culled: int
    servers_stopped: int
    servers_pending: int
    users_deleted: int
    skipped: int
    errors: int
    aborted: str | None
    interrupted: bool
    #: How it ended (:data:`~._report.OUTCOMES`).
    outcome: str = "ran"

    @classmethod
    def of(cls, report: PassReport) -> PassSummary:
        # The report's values of the same names, but for the two that are tallies there.
        same = {field.name: getattr(report, field.name) for field in attrs.fields(cls) if field.name not in _TALLIES}
        return cls(**same, servers_culled=sum(report.servers_culled.values()), errors=report.error_count)


_TALLIES = ("servers_culled", "errors")


@attrs.frozen(kw_only=True)
class StatusSnapshot:
    #: Grows by one with each pass; a cache of anything rendered from a snapshot is keyed on it.
    version: int
    #: Passes and culls kept (``--status-history``).
    history: int
    #: The effective configuration, as ``--show-config`` prints it, but never the token, and URLs as
    #: :func:`~._redact.shown_url` shows them.
    config: Mapping[str, Any]
    #: Newest first (before the first pass: none, and nothing of what follows).
    passes: Sequence[PassSummary] = ()
    #: Newest first.
    culls: Sequence[CullRecord] = ()
    #: Errors of the last pass (the first ERRORS_SHOWN of those it kept).
    last_errors: Sequence[PassError] = ()
    #: From the last pass that read the user list: the soonest culls due, soonest first ...
    upcoming: Sequence[Forecast] = ()
    #: ... and how many are due within ``horizon`` after ``upcoming_as_of``, by limit.
    upcoming_due: Mapping[str, int] = attrs.field(factory=dict)
    upcoming_as_of: datetime | None = None
    horizon: timedelta = DEFAULT_HORIZON
    #: When the next pass is due to start, if one is scheduled.
    next_pass_at: datetime | None = None
    #: Why what comes next cannot be foreseen, in whole or in part (the count due is then unknown); None when
    #: it can be.
    upcoming_unknown: str | None = None
    #: Servers kept by the last pass that ran (decided every user), by the decision's code, and when it started.
    kept: Mapping[str, int] = attrs.field(factory=dict)
    kept_as_of: datetime | None = None
    warnings: WarningTally = attrs.field(factory=WarningTally)
    #: Each user's warnings that stand and keeps, by user name: only that user's own view reads theirs
    #: (:meth:`warnings_of`); never in the whole hub's document.
    user_warnings: UsersWarnings = attrs.field(factory=UsersWarnings, repr=False, eq=False)
    #: Set when the configuration cannot be used: no pass runs, and the page shows only this.
    config_error: str | None = None

    def warnings_of(self, user: str) -> UserWarnings:
        """``user``'s own warnings that stand and keeps (none of anyone else's)."""
        return self.user_warnings.of_user(user)

    @property
    def upcoming_total(self) -> int:
        return sum(self.upcoming_due.values())

    def to_json(self) -> dict[str, Any]:
        """The document ``api/status`` serves (README: "The status page"). Times are ISO 8601 UTC."""
        return {
            # The whole hub's: a user who is not an admin gets a document of their own ("view": "user").
            "view": "all",
            "version": self.version,
            "history": self.history,
            "config_error": self.config_error,
            "passes": [_json(summary) for summary in self.passes],
            "culls": [_json(record) for record in self.culls],
            "last_errors": [{"subject": e.subject, "kind": e.kind, "message": e.message} for e in self.last_errors],
            "upcoming": {
                "as_of": iso_utc(self.upcoming_as_of),
                "horizon_seconds": seconds(self.horizon),
                "due": dict(self.upcoming_due),
                # Unknown is not 0: a reader that sums the due must not read "nothing comes" into it.
                "total_due": None if self.upcoming_unknown else self.upcoming_total,
                "foreseen": self.upcoming_total,
                "unknown": self.upcoming_unknown,
                "soonest": [_json(forecast) for forecast in self.upcoming],
            },
            "kept": {"as_of": iso_utc(self.kept_as_of), "by_reason": dict(self.kept)},
            "warnings": self.warnings.to_json(),
            "next_pass_at": iso_utc(self.next_pass_at),
            "config": dict(self.config),
        }


class History:
    """Receives every finished pass and publishes a new :class:`StatusSnapshot` for readers."""

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        size: int = DEFAULT_HISTORY,
        interval: float | None = None,
        users: UserRecord | None = None,
    ):
        if size < 1:
            raise ValueError("a history keeps at least one pass")
        self.size = size
        #: Each user's own culls, and what the passes decided about servers only they could judge: what the
        #: page's user view shows (the snapshot's culls are everyone's, and the latest ``size`` only).
        self.users = users if users is not None else UserRecord()
        self._interval = interval
        self._passes: deque[PassSummary] = deque(maxlen=size)
        self._culls: deque[CullRecord] = deque(maxlen=size)
        self._versions = itertools.count(1)
        self._warnings = WarningLedger(enabled=bool(config.get("warn_before")))
        self.snapshot = StatusSnapshot(
            version=0,
            history=size,
            config=_shown_config(config),
            warnings=WarningTally(enabled=bool(config.get("warn_before"))),
        )

    def observe(self, report: PassReport) -> None:
        """A :data:`~._service.Reporter`: fold one finished pass in and publish the new snapshot."""
        self._passes.appendleft(PassSummary.of(report))
        if report.stops_confirmed:
            self._confirm_stops(frozenset(report.stops_confirmed))
            self.users.confirm_stops(frozenset(report.stops_confirmed))
        # deque(maxlen) drops from the other end: the newest `size` culls stay, newest first.
        self._culls.extendleft(report.culls[-self.size :])
        self.users.add_culls(report.culls)
        self.users.add_judgments(report.judgments)
        previous = self.snapshot
        read_the_users = report.aborted is None
        # What was kept is known from a pass that decided every user.
        ran = report.outcome == "ran"
        kept = dict(report.servers_kept) if ran else previous.kept
        self.snapshot = StatusSnapshot(
            version=next(self._versions),
            history=self.size,
            passes=tuple(self._passes),
            culls=tuple(self._culls),
            last_errors=tuple(report.errors[:ERRORS_SHOWN]),
            # A pass that never read the user list knows nothing new about what comes next.
            upcoming=tuple(report.upcoming) if read_the_users else previous.upcoming,
            upcoming_due=dict(report.upcoming_due) if read_the_users else previous.upcoming_due,
            upcoming_as_of=report.started if read_the_users else previous.upcoming_as_of,
            upcoming_unknown=_unforeseeable(report, previous.config),
            horizon=previous.horizon,
            next_pass_at=None if self._interval is None else _next_start(report.started, self._interval),
            config=previous.config,
            kept=kept,
            kept_as_of=report.started if ran else previous.kept_as_of,
            warnings=self._warnings.observe(report, waiting=kept.get("warned", 0)),
            user_warnings=self._warnings.by_user,
        )

    def config_error(self, message: str) -> None:
        """Publish a snapshot that says the configuration cannot be used, and that no pass runs."""
        self.snapshot = attrs.evolve(self.snapshot, version=next(self._versions), config_error=message)

    def _confirm_stops(self, done: frozenset[tuple[str, str]]) -> None:
        """Culls still ``pending`` whose stop a later pass saw done are ``stopped`` now."""
        self._culls = deque(
            (
                attrs.evolve(cull, outcome="stopped")
                if cull.outcome == "pending" and (cull.user, cull.server) in done
                else cull
                for cull in self._culls
            ),
            maxlen=self.size,
        )


def _unforeseeable(report: PassReport, config: Mapping[str, Any]) -> str | None:
    """Why the culls to come cannot all be foreseen after ``report``, or None when they can."""
    if report.outcome in ("hub_down", "scopes") or not report.listed:
        return f"the last pass did not read the hub's users ({report.aborted or 'stopped before it could'})"
    if report.outcome == "interrupted":
        return "the last pass was stopped before it read every user"
    if report.outcome == "failed":
        return f"the last pass could not read every user ({report.pages_failed} of the hub's pages failed)"
    if config.get("cull_arbiter_hook") is not None:
        return "a cull_arbiter_hook decides idleness, which cannot be foreseen: only --max-age culls are counted"
    failed = report.servers_not_inspected
    if config.get("kernel_activity_only") and failed:
        noun = "server" if failed == 1 else "servers"
        return (
            f"{failed} {noun} could not be inspected, and with --kernel-activity-only only their kernels say when "
            "they will be idle"
        )
    return None


#: The configuration's URLs, and whether their path may be shown: the hub's path is its base URL, a webhook's
#: path is often its secret. --show-config prints them whole: that is the operator's own terminal.
_URLS = {"url": True, "public_url": True, "warn_url": False}


def _shown_config(config: Mapping[str, Any]) -> dict[str, Any]:
    shown = dict(config)
    for key, keep_path in _URLS.items():
        if isinstance(shown.get(key), str):
            shown[key] = shown_url(shown[key], keep_path=keep_path)
    return shown


def _next_start(started: datetime, interval: float) -> datetime:
    # Passes start every `interval` seconds, start to start; an overlong pass is followed at once.
    return max(started + timedelta(seconds=interval), datetime.now(UTC))


def _json(value: PassSummary | CullRecord | Forecast) -> dict[str, Any]:
    """A record as ``api/status`` shows it: its fields, instants in ISO 8601 UTC, a duration in seconds."""
    out = record_json(value)
    if "duration" in out:
        out["duration_seconds"] = round(out.pop("duration"), 3)
    return out
