"""The notice board: the one notice and the one keep a single-user server holds, in memory.

The culler puts and withdraws notices; the user's browser reads them and asks to keep the server. Both read the
same state (docs/notice-api.md): the notice, the last keep, the server's clock and its own last activity.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["Keep", "Notice", "NoticeBoard", "format_time"]


def format_time(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``, as browsers' ``Date.parse`` and Python's ``fromisoformat`` both read it;
    microseconds are kept when there are any (a keep a fraction of a second after a warning is after it). A
    naive time is UTC, as jupyter_server means it."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Notice:
    id: str
    warned_at: datetime
    cull_at: datetime
    idle_since: datetime | None
    reason: str
    limit: str
    limit_seconds: int | float
    rule: str | None
    activity: str
    keepable: bool

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "warned_at": format_time(self.warned_at),
            "cull_at": format_time(self.cull_at),
            "idle_since": None if self.idle_since is None else format_time(self.idle_since),
            "reason": self.reason,
            "limit": self.limit,
            "limit_seconds": self.limit_seconds,
            "rule": self.rule,
            "activity": self.activity,
            "keepable": self.keepable,
        }


@dataclass(frozen=True, slots=True)
class Keep:
    notice_id: str | None
    requested_at: datetime

    def to_json(self) -> dict[str, object]:
        return {"notice_id": self.notice_id, "requested_at": format_time(self.requested_at)}


class NoticeBoard:
    """One notice and one keep. Not thread-safe: jupyter_server's handlers all run on its one event loop."""

    def __init__(self) -> None:
        self.notice: Notice | None = None
        self.keep: Keep | None = None

    def put(self, notice: Notice) -> None:
        """A new notice replaces the old one, whatever their ids (a redelivery has the same id)."""
        self.notice = notice

    def withdraw(self, notice_id: str) -> bool:
        """Removes the notice if it is the one named; another one (a newer warning) stays."""
        if self.notice is not None and self.notice.id == notice_id:
            self.notice = None
            return True
        return False

    def record_keep(self, notice_id: str | None, now: datetime) -> None:
        """The user asked to keep the server. The culler counts any keep after its warning as use, whatever
        notice the page showed, so the current notice goes too, unless it cannot be kept (``max_age``): that
        one stays, since the server will be stopped anyway."""
        self.keep = Keep(notice_id, now)
        if self.notice is not None and self.notice.keepable:
            self.notice = None

    def state(self, now: datetime, last_activity: datetime | None = None) -> dict[str, object]:
        """The state; ``last_activity``: the server's own (jupyter_server's), which the culler reads because the
        proxy in front of the server keeps only its latest request, and a request of the culler's hides the
        user's activity before it from the hub."""
        return {
            "notice": None if self.notice is None else self.notice.to_json(),
            "keep": None if self.keep is None else self.keep.to_json(),
            "now": format_time(now),
            "last_activity": None if last_activity is None else format_time(last_activity),
        }
