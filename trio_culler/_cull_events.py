"""What the warnings say: the events of one idle stretch (``warning``, then ``cancelled`` or ``culled``), each with
the id of its stretch, and the notice a warned server is given (docs/notice-api.md).

::

    warning   --> culled                      the server was stopped by the culler, at or after cull_at
              --> cancelled (detail)          used                  activity moved its cull time later
                                              kept                  its user asked to keep it (kept_at: when)
                                              kernel_busy           a busy kernel spares it
                                              exempt, default_disabled, named_disabled
                                                                    a rule (or option) no longer culls it
                                              changed               the limit that applies changed
                                              stopped               stopped or restarted by someone else

The id names one stretch of one server: the same in every event about it, another for the next stretch. It is
derived from what names the stretch (user, server, the server's start, the time its rule would cull it, as
judged when warned), so the same stretch gets the same id even after a restart that lost the state file; a new
cull time is a new stretch, so a receiver never sees two cull times under one id.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime
from typing import Any, Final

import attrs

from ._codes import DecisionCode
from ._decide import idle_since
from ._judge import Verdict
from ._models import Server
from ._notice import Notice
from ._records import record_json
from ._rules import MatchedRule
from ._time import iso_utc

__all__ = [
    "ACTIVITY_HUB",
    "ACTIVITY_KERNELS",
    "DETAILS",
    "EVENTS",
    "CullEvent",
    "log_event",
    "notice_for",
    "stretch_id",
]

log = logging.getLogger("trio_culler")

EVENTS: Final = ("warning", "cancelled", "culled")
#: Why a warning was cancelled (``detail``): see the module docstring.
DETAILS: Final = (
    "used",
    "kept",
    "kernel_busy",
    "exempt",
    "default_disabled",
    "named_disabled",
    "changed",
    "stopped",
)
#: What counts as using a server, in words for its user: by the hub's activity, and by kernels and terminals.
ACTIVITY_HUB: Final = (
    "anything that reaches this server through JupyterHub: a page of it open in a browser, running code, "
    "its API, or Keep running"
)
ACTIVITY_KERNELS: Final = (
    "running code in a notebook or typing in a terminal, or Keep running; an open browser tab alone does not count"
)


def stretch_id(user: str, server: str, started: datetime | None, due: datetime) -> str:
    """The id of the idle stretch of ``user``'s ``server`` (started at ``started``) that its rule culls at ``due``."""
    text = "\0".join((user, server, iso_utc(started) or "", iso_utc(due) or ""))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


@attrs.frozen(kw_only=True)
class CullEvent:
    """One event of one idle stretch, as the hook, the webhook and the log see it. The fields are in the order of
    :meth:`payload`'s keys: the first release's, then the event's."""

    user: str
    server: str
    #: The cull time the warning announced.
    cull_at: datetime
    #: The code of the cull announced (``idle``, ``kernels_idle``, ``busy_expired``, ``max_age``).
    reason: str
    #: The server's idle time, by its rule's clock, when the event happened (None: unknown).
    idle_seconds: float | None
    event: str
    id: str
    warned_at: datetime
    #: When the event happened (the culler's clock).
    at: datetime
    #: Why a warning was cancelled (``cancelled`` only): one of :data:`DETAILS`.
    detail: str | None = None
    #: When its user asked to keep the server (``cancelled`` with ``detail="kept"``).
    kept_at: datetime | None = None
    user_model: Any = attrs.field(eq=False, repr=False, factory=dict)
    server_model: Any = attrs.field(eq=False, repr=False, factory=dict)

    def payload(self) -> dict[str, Any]:
        """The JSON object POSTed to ``--warn-url``: the keys of the first release's warnings, and the event's."""
        idle = None if self.idle_seconds is None else round(self.idle_seconds, 3)
        return record_json(self, leave_out=("user_model", "server_model")) | {"idle_seconds": idle}

    @property
    def label(self) -> str:
        return f"{self.user}/{self.server}" if self.server else self.user


def notice_for(
    event: CullEvent,
    verdict: Verdict,
    matched: MatchedRule,
    server: Server,
    *,
    by_kernels: bool,
    kept_at: datetime | None,
) -> Notice:
    """The notice for a ``warning`` event: the limit, the rule and what counts as activity, from the verdict
    that warned. ``server`` is the server as judged; ``kept_at``: a keep already counted as its activity."""
    policy, due = matched.policy, verdict.due
    assert due is not None
    code = due.code
    if code is DecisionCode.MAX_AGE:
        limit, since = "max_age", None
    else:
        busy_limit = code is DecisionCode.BUSY_EXPIRED and due.limit is not None and due.limit == policy.max_busy
        limit = "max_busy" if busy_limit else "timeout"
        since = idle_since(server, policy=policy, activity=verdict.activity)
        if kept_at is not None and (since is None or since < kept_at):
            since = kept_at
    seconds = (due.limit if due.limit is not None else policy.timeout).total_seconds()
    return Notice(
        id=event.id,
        warned_at=event.warned_at,
        cull_at=event.cull_at,
        idle_since=since,
        reason=str(code),
        limit=limit,
        limit_seconds=seconds,
        # Never the full label: whom a rule matches names other users and groups, and the server is its user's.
        rule=None if matched.rule is None else matched.own_label,
        activity=ACTIVITY_KERNELS if by_kernels else ACTIVITY_HUB,
        keepable=code is not DecisionCode.MAX_AGE,
    )


def log_event(event: CullEvent, fields: dict[str, Any], *, dry_run: bool) -> None:
    """The event's line in the culler's log (``fields``: its JSON fields); a dry run's warning says so."""
    label, when = event.label, fields["cull_at"]
    if event.event == "warning":
        if dry_run:
            log.info("Would warn the user of server %s: cull at %s [dry run]", label, when, extra=fields)
        else:
            log.info(
                "Warning the user of server %s: cull at %s (%s; warning %s)",
                label,
                when,
                event.reason,
                event.id,
                extra=fields,
            )
    elif event.event == "cancelled" and event.detail == "kept":
        kept_at = event.payload()["kept_at"]
        log.info(
            "Not culling server %s: its user asked to keep it at %s (warning %s cancelled)",
            label,
            kept_at,
            event.id,
            extra={**fields, "kept_at": kept_at},
        )
    elif event.event == "cancelled":
        log.info("Warning %s for server %s cancelled (%s)", event.id, label, event.detail, extra=fields)
    elif log.isEnabledFor(logging.DEBUG):
        log.debug("Warning %s for server %s: culled", event.id, label, extra=fields)
