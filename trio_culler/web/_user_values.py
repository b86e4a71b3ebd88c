"""What a user's own view holds, and its JSON (``api/status`` for a user who is not an admin): plain values.

:mod:`._user_view` builds them; the ``user.html`` template and :meth:`UserView.to_json` show them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs

from .._policy import Policy
from .._records import record_json
from .._report import CullRecord
from .._time import iso_utc, seconds
from .._warnings_now import StandingWarning

__all__ = ["ServerView", "UserView"]


@attrs.frozen(kw_only=True)
class ServerView:
    name: str
    #: ``running``, ``starting``, ``stopping``, ``not ready``; None when the hub could not be read.
    state: str | None
    started: datetime | None = None
    last_activity: datetime | None = None
    #: Since the last activity the hub recorded (or the start, when it recorded none).
    idle: timedelta | None = None
    age: timedelta | None = None
    #: The rule whose limits apply (:func:`own_rule`'s label); None: the culler's own options.
    rule: str | None = None
    #: The limits that apply; None when the hub could not be read (the rule that matches is then unknown).
    policy: Policy | None = None
    #: What counts as activity: a code (``hub``, ``kernels``, ``nothing``) and the words shown.
    activity: tuple[str, str] | None = None
    #: Who judged: ``page`` (now, as the pass would), ``pass`` (the last pass, at ``judged_at``), or None: the
    #: next pass decides (kernels to read or a hook to ask, and no judgment of it remembered).
    judged_by: str | None = None
    judged_at: datetime | None = None
    #: The judgment's code and words (``active``, ``kernel busy for 00:12:00``), and whether it culls.
    code: str | None = None
    reason: str | None = None
    culling: bool = False
    #: When it will be culled if nothing changes, by which code, and the limit that sets that time (seconds).
    cull_at: datetime | None = None
    cull_code: str | None = None
    limit_seconds: float | None = None
    #: When its user is warned, with --warn-before (for a server not warned yet; None once a warning stands).
    warn_at: datetime | None = None
    #: The warning that stands for this run of the server, as the last pass left it: its ``cull_at`` is then
    #: this view's (the time announced holds, not the forecast).
    warning: StandingWarning | None = None
    #: Where that warning went beside the hub operators' hook and URL: ``server`` (to the server too, where the
    #: extension shows it), ``no_extension`` (the server has no notice API), ``off`` (the culler delivers no
    #: notices to servers).
    notice: str | None = None
    #: When its user asked to keep it (Keep running), as the culler remembers it for this run of the server.
    kept_at: datetime | None = None

    @property
    def cull_at_from(self) -> str | None:
        """Where ``cull_at`` comes from: ``warning`` (the time announced), ``forecast``, or None (unknown)."""
        if self.warning is not None:
            return "warning"
        return None if self.cull_at is None else "forecast"

    def to_json(self) -> dict[str, Any]:
        policy = self.policy
        return {
            "server": self.name,
            "state": self.state,
            "started": iso_utc(self.started),
            "last_activity": iso_utc(self.last_activity),
            "idle_seconds": seconds(self.idle),
            "age_seconds": seconds(self.age),
            "rule": self.rule,
            "limits": None if policy is None else policy.limits_json(),
            "activity": None if self.activity is None else {"counts": self.activity[0], "words": self.activity[1]},
            "judged": None
            if self.judged_by is None
            else {
                "by": self.judged_by,
                "at": iso_utc(self.judged_at),
                "decision": self.code,
                "reason": self.reason,
                "culling": self.culling,
            },
            "cull_at": iso_utc(self.cull_at),
            "cull_rule": self.cull_code,
            "limit_seconds": self.limit_seconds,
            "warn_at": iso_utc(self.warn_at),
            "cull_at_from": self.cull_at_from,
            "warning": None
            if self.warning is None
            else {
                "id": self.warning.id,
                "warned_at": iso_utc(self.warning.warned_at),
                "cull_at": iso_utc(self.warning.cull_at),
                "reason": self.warning.reason,
                "notice": self.notice,
            },
            "kept_at": iso_utc(self.kept_at),
        }


@attrs.frozen(kw_only=True)
class UserView:
    user: str
    now: datetime
    #: Whether the hub answered for this view, and if not, why (a sentence for the user).
    hub_read: bool
    hub_problem: str | None
    servers: Sequence[ServerView]
    #: Newest first.
    culls: Sequence[CullRecord]
    #: How many culls of how many users the culler remembers (the page says so where it shows none).
    culls_per_user: int
    users_remembered: int
    last_pass_at: datetime | None
    next_pass_at: datetime | None
    #: The culler waits with a configuration error: nothing is culled (its words are for operators only).
    stopped: bool
    dry_run: bool
    #: --warn-before, in seconds (0: no warnings).
    warn_before: float = 0
    #: Why the rules cannot be applied to this user (the culler's token cannot see what they match on).
    rules_problem: str | None = None
    #: Whether warnings also go to the hub operators' hook or URL (``warn_hook``, ``--warn-url``).
    warns_operators: bool = False

    def to_json(self) -> dict[str, Any]:
        """The document ``api/status`` serves a user who is not an admin (README: "The status page")."""
        return {
            "view": "user",
            "user": self.user,
            "as_of": iso_utc(self.now),
            "hub": {"read": self.hub_read, "problem": self.hub_problem},
            "culler": {
                "running": not self.stopped,
                "dry_run": self.dry_run,
                "last_pass_at": iso_utc(self.last_pass_at),
                "next_pass_at": iso_utc(self.next_pass_at),
            },
            "servers": [server.to_json() for server in self.servers],
            "culls": [record_json(cull) for cull in self.culls],
            "remembered": {"culls_per_user": self.culls_per_user, "users": self.users_remembered},
        }
