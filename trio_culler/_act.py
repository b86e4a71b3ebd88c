"""Carrying out decisions: one DELETE per culled server or user, its answer mapped to an Outcome.

Failures are recorded against the user and never raised to the pass, except an authorisation error, which
would fail the same way for every user and so ends the pass with one clear message.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from ._decide import Action, Decision
from ._errors import HubAuthError, HubError
from ._hub import HubClient
from ._report import CullRecord, PassRecorder
from ._rules import MatchedRule
from ._time import seconds

__all__ = ["Outcome", "StopWithdrawn", "decision_fields", "delete_user", "stop_server"]

log = logging.getLogger("trio_culler")


class Outcome(enum.Enum):
    KEPT = "kept"
    STOPPED = "stopped"
    PENDING = "pending"
    GONE = "gone"
    DELETED = "deleted"
    WOULD_ACT = "would_act"  # dry run
    FAILED = "failed"

    @property
    def server_down(self) -> bool:
        """Whether the server can be counted as stopped when deciding about its user."""
        return self in (Outcome.STOPPED, Outcome.GONE, Outcome.WOULD_ACT)


class StopWithdrawn(Exception):
    """Raised by a stop's ``confirm`` before the DELETE is sent again: the server changed while the stop waited
    for its retry (``outcome``: what the pass makes of it). Not a HubError: nothing failed, and nothing is
    recorded as a cull."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.value)
        self.outcome = outcome


#: The hub's answers to a stop (the statuses HubClient.stop_server accepts) and to a user's deletion: the one
#: place where a status becomes an Outcome.
_STOPPED = {200: Outcome.STOPPED, 204: Outcome.STOPPED, 202: Outcome.PENDING, 404: Outcome.GONE}
_DELETED = {200: Outcome.DELETED, 204: Outcome.DELETED, 404: Outcome.GONE}


async def stop_server(
    hub: HubClient,
    user: str,
    server: str,
    decision: Decision,
    *,
    dry_run: bool,
    recorder: PassRecorder,
    matched: MatchedRule | None = None,
    judged_started: datetime | None = None,
    user_culling: bool = False,
    confirm: Callable[[], Awaitable[None]] | None = None,
) -> Outcome:
    """Stop (or remove) a server. ``judged_started``: the start of the server the decision judged, in the log
    line's JSON fields, so that a reader can tell the cull of that server from the cull of a restarted one.
    ``user_culling``: whether the pass may delete this server's user (then a stop still under way keeps it).
    ``confirm``: awaited before the DELETE is retried (after a 503, a refused connection, a timeout); it raises
    :class:`StopWithdrawn`, which ends the stop unrecorded, when the decision no longer holds."""
    # Formatted once: the log line, its JSON fields and the pass's record all say the same words.
    reason = decision.reason
    fields = decision_fields(decision, user, server, reason=reason)
    fields["judged_started"] = None if judged_started is None else judged_started.isoformat().replace("+00:00", "Z")
    outcome = await _stop_server(
        hub,
        user,
        server,
        decision,
        fields,
        dry_run=dry_run,
        recorder=recorder,
        matched=matched,
        user_culling=user_culling,
        confirm=confirm,
    )
    recorder.cull(_record(user, server, decision, reason, outcome, matched))
    return outcome


async def _stop_server(
    hub: HubClient,
    user: str,
    server: str,
    decision: Decision,
    fields: dict[str, object],
    *,
    dry_run: bool,
    recorder: PassRecorder,
    matched: MatchedRule | None,
    user_culling: bool,
    confirm: Callable[[], Awaitable[None]] | None,
) -> Outcome:
    label = f"{user}/{server}" if server else user
    reason = str(fields["reason"])
    if matched is not None and matched.rule is not None:
        # Which rule set the limits: the first question an operator asks about a cull they did not expect.
        fields["matched_rule"] = matched.index
        label_reason = f"{reason}; {matched.label}"
    else:
        label_reason = reason
    if dry_run:
        recorder.servers_culled[decision.code] += 1
        log.info("Would cull server %s (%s) [dry run]", label, label_reason, extra=fields)
        return Outcome.WOULD_ACT
    log.info("Culling server %s (%s)", label, label_reason, extra=fields)
    try:
        status = await hub.stop_server(user, server, remove=decision.action is Action.REMOVE, before_retry=confirm)
        outcome = _STOPPED[status]
    except HubAuthError:
        raise
    except HubError as error:
        recorder.error(label, error)
        log.error("Failed to stop server %s: %s", label, error, extra={**fields, "error": error.kind})
        return Outcome.FAILED
    # Counted once the hub took the stop: a refused or failed DELETE is an error, not a cull.
    recorder.servers_culled[decision.code] += 1
    if outcome is Outcome.PENDING:
        recorder.servers_pending += 1
        if user_culling:
            log.warning("Server %s is slow to stop; its user is kept this pass", label, extra=fields)
        else:
            log.warning("Server %s is slow to stop: the hub answered 202 and goes on stopping it", label, extra=fields)
        return Outcome.PENDING
    recorder.servers_stopped += 1
    if outcome is Outcome.GONE:
        log.info("Server %s was already gone", label, extra=fields)
        return Outcome.GONE
    return outcome


async def delete_user(
    hub: HubClient, user: str, decision: Decision, *, dry_run: bool, recorder: PassRecorder
) -> Outcome:
    reason = decision.reason
    outcome = await _delete_user(hub, user, decision, reason, dry_run=dry_run, recorder=recorder)
    recorder.cull(_record(user, None, decision, reason, outcome))
    return outcome


async def _delete_user(
    hub: HubClient, user: str, decision: Decision, reason: str, *, dry_run: bool, recorder: PassRecorder
) -> Outcome:
    fields = decision_fields(decision, user, None, reason=reason)
    if dry_run:
        recorder.users_culled += 1
        log.info("Would cull user %s (%s) [dry run]", user, reason, extra=fields)
        return Outcome.WOULD_ACT
    log.info("Culling user %s (%s)", user, reason, extra=fields)
    try:
        outcome = _DELETED[await hub.delete_user(user)]
    except HubAuthError:
        raise
    except HubError as error:
        recorder.error(user, error)
        log.error("Failed to delete user %s: %s", user, error, extra={**fields, "error": error.kind})
        return Outcome.FAILED
    recorder.users_culled += 1
    recorder.users_deleted += 1
    return outcome


_OUTCOME_WORDS = {Outcome.WOULD_ACT: "dry_run"}


def _record(
    user: str,
    server: str | None,
    decision: Decision,
    reason: str,
    outcome: Outcome,
    matched: MatchedRule | None = None,
) -> CullRecord:
    return CullRecord(
        user=user,
        server=server,
        action=decision.action.value,
        rule=decision.code,
        reason=reason,
        at=datetime.now(UTC),
        outcome=_OUTCOME_WORDS.get(outcome, outcome.value),
        matched_rule=None if matched is None or matched.rule is None else matched.label,
        signal=decision.signal,
    )


def decision_fields(
    decision: Decision, user: str, server: str | None, *, reason: str | None = None
) -> dict[str, object]:
    """The JSON log fields of a decision: who, what, why, and (for an inspected server) which signal decided.
    ``reason``: ``decision.reason`` when the caller already formatted it."""
    fields: dict[str, object] = {
        "user": user,
        "server": server,
        "action": decision.action.value,
        "reason": decision.reason if reason is None else reason,
        "rule": decision.code,
        "inactive_seconds": seconds(decision.inactive),
        "age_seconds": seconds(decision.age),
    }
    if decision.inspected:
        fields["signal"] = decision.signal
        fields["hub_inactive_seconds"] = seconds(decision.hub_inactive)
        fields["busy_seconds"] = seconds(decision.busy)
    return fields
