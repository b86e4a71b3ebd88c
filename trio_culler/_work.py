"""What a worker does with one user: judge each server, warn, check an old judgment again, act; then the user.

A judgment rests on the listing that read the user, and a listing ages while the pass works through it (a page
of 200 users handed to workers that each wait seconds for a DELETE). A server stopped and started again in that
time is a new server that the old judgment does not describe, and a user who started a server is no longer a
user without one: culling on the old judgment would end someone's fresh session. So before a DELETE whose
listing is older than :data:`RECHECK_AFTER`, the user is read again (``GET /users/{name}``, one request) and:

- the server gone: nothing to do; a user with a server running again: kept;
- the server's ``started`` or ``last_activity`` moved: judged again, from the fresh model;
- otherwise the judgment stands.

A younger listing is trusted: a server with a process behind it takes longer than that to stop and start
again (see :data:`RECHECK_AFTER`), and the common pass (pages handed over in well under a second) costs no
request more. A DELETE that must be sent again (the hub answered 503, with or without ``Retry-After``, or did
not answer) waited long enough for the same to happen: before each retry the user is read again, whatever the
listing's age, and the stop is withdrawn (:class:`~trio_culler._act.StopWithdrawn`) when the judgment no longer
holds or the user cannot be read (the next pass decides); a server gone is stopped again all the same (the DELETE
whose answer was lost may have done it: the retry's 204 counts it once).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta

import attrs
import trio

from ._act import Outcome, StopWithdrawn, decision_fields, delete_user, stop_server
from ._codes import DecisionCode
from ._config import Config
from ._credentials import CredentialUnavailable, ServerCredentials
from ._decide import Action, Decision, decide_user
from ._errors import HubAuthError, HubError
from ._hub import HubClient
from ._judge import DECIDED_FROM_HUB_DATA, Judge, Verdict
from ._judgments import ServerJudgment
from ._models import Server, User
from ._notify import Notifier
from ._report import PassRecorder
from ._rules import MatchedRule

__all__ = ["RECHECK_AFTER", "UserWork", "Work"]

log = logging.getLogger("trio_culler")

#: Seconds after which a listing is read again before a DELETE rests on it. A server with a process behind it
#: cannot be stopped and started again faster (the hub waits for the old process to end and the new one to
#: answer: benchmarks/RESTART.md), and an ordinary pass hands its users over well within it, so it costs no
#: request more; a slow pass (stops that take seconds, few workers) pays one GET per cull on an older listing.
RECHECK_AFTER = 2.0


@attrs.frozen
class Work:
    """A user handed to a worker, with the verdict on each server the pager could reach purely."""

    user: User
    #: server name -> verdict; None where a hook must be asked or the server inspected (the worker judges).
    verdicts: Mapping[str, Verdict | None]
    #: ``trio.current_time()`` when the listing that read the user was asked for: how old its data is.
    listed_at: float


def _label(user: str, server: str) -> str:
    return f"{user}/{server}" if server else user


@attrs.frozen
class UserWork:
    """What every worker of one pass shares."""

    hub: HubClient
    config: Config
    judge: Judge
    now: datetime
    recorder: PassRecorder
    notifier: Notifier | None = None
    #: The per-server tokens inspection uses; a culled server's is revoked at once.
    credentials: ServerCredentials | None = None

    async def handle(self, work: Work) -> None:
        user = work.user
        # The pager vetted the whole page already; a worker still never decides with a rule it cannot evaluate.
        self.config.rule_table.check_visible(user)
        servers = list(user.servers.values())
        outcomes: list[Outcome] = []

        async def one(server: Server) -> None:
            outcomes.append(await self._server(work, server))

        if len(servers) == 1:
            await one(servers[0])
        elif servers:
            # A user's servers are independent: stop them together, as the original does; the limiter still
            # bounds the requests.
            async with trio.open_nursery() as nursery:
                for server in servers:
                    nursery.start_soon(one, server)
        table = self.config.rule_table
        if not table.may_cull_users:
            return
        servers_left = sum(1 for outcome in outcomes if not outcome.server_down)
        decision = decide_user(user, policy=table.for_user(user).policy, now=self.now, servers_left=servers_left)
        if decision.action is Action.DELETE_USER:
            if await self._user_still_idle(work):
                await delete_user(self.hub, user.name, decision, dry_run=self.config.dry_run, recorder=self.recorder)
        elif log.isEnabledFor(logging.DEBUG):
            log.debug("Not culling user %s (%s)", user.name, decision.reason, extra={"user": user.name})

    async def _server(self, work: Work, server: Server) -> Outcome:
        user = work.user
        matched = self.config.rule_table.for_server(user, server)
        verdict = work.verdicts.get(server.name)
        notifier = self.notifier
        inputs = None if notifier is None else notifier.inputs(user, server, self.now)
        if inputs is not None and inputs.remembered:
            # Warned or kept: judged here, with what the warnings know and the pager does not.
            verdict = None
        judged = server if inputs is None else inputs.server
        judged_here = verdict is None
        if verdict is None:
            verdict = await self.judge.judge(
                user,
                judged,
                matched.policy,
                self.now,
                kept_at=None if inputs is None else inputs.kept_at,
                announced=None if inputs is None else inputs.announced,
            )
            self.account(user.name, verdict)
            # The status page shows its user this judgment: the page itself must not ask the server or the hook.
            self.recorder.judged(ServerJudgment.of(user.name, verdict, judged_at=self.now, rule=_rule_label(matched)))
        keep_read = inputs is not None and inputs.announced is not None and inputs.announced.read_keep
        held = notifier is not None and self._held_for_warning(notifier, user, judged, matched, verdict, keep_read)
        self._foresee(user.name, server.name, matched, verdict, judged_here=judged_here)
        if held:
            self.recorder.kept("warned")
            return Outcome.KEPT
        if not verdict.acts:
            self.recorder.kept(verdict.decision.code)
            _log_kept(user.name, server, verdict.decision, matched)
            return Outcome.KEPT
        checked = await self._recheck(work, server, verdict)
        if isinstance(checked, Outcome):
            return checked

        async def confirm() -> None:
            again = await self._recheck(work, server, checked, always=True)
            # Gone: perhaps by the DELETE whose answer was lost; the retry finds it so (204) and counts it once.
            if isinstance(again, Outcome) and again is not Outcome.GONE:
                raise StopWithdrawn(again)

        try:
            outcome = await stop_server(
                self.hub,
                user.name,
                server.name,
                checked.decision,
                dry_run=self.config.dry_run,
                recorder=self.recorder,
                matched=matched,
                judged_started=checked.server.started,
                user_culling=self.config.rule_table.for_user(user).policy.cull_users,
                confirm=confirm,
            )
        except StopWithdrawn as withdrawn:
            outcome = withdrawn.outcome
        if notifier is not None:
            notifier.stopped(
                user.name,
                server.name,
                culled=outcome in (Outcome.STOPPED, Outcome.PENDING),
                gone=outcome is Outcome.GONE,
            )
        if self.credentials is not None and outcome in (Outcome.STOPPED, Outcome.PENDING, Outcome.GONE):
            await self.credentials.release(user.name, server.name)
        return outcome

    def account(self, user: str, verdict: Verdict) -> None:
        """Count what judging one server read and what failed; the first failure of each kind in a pass is a
        line of its own, the rest DEBUG (2,000 servers failing the same way say it once)."""
        recorder = self.recorder
        label = _label(user, verdict.server.name)
        fields = {"user": user, "server": verdict.server.name}
        if verdict.activity is not None:
            recorder.servers_inspected += 1
            if verdict.activity.report_unread:
                # Its kernels were read, its own last activity (api/status) not: counted, never logged per server.
                recorder.inspection_failed("status_unreadable")
        failed = verdict.inspection
        if isinstance(failed, CredentialUnavailable):
            # Not an answer that could not be read: the server could not even be asked (no token of its user's).
            recorder.error(label, failed, kind="credential")
            log.log(
                logging.WARNING if recorder.first_in_pass(f"credential:{failed.reason}") else logging.DEBUG,
                "No credential to inspect server %s (%s); not culling it for idleness in this pass, nor any other "
                "server failing this way",
                label,
                failed,
                extra={**fields, "credential_failure": failed.reason},
            )
        elif failed is not None:
            first = recorder.inspection_failed(failed.kind)
            if failed.kind in DECIDED_FROM_HUB_DATA:
                outcome = "deciding it and any other server failing this way in this pass from the hub's data"
            else:
                recorder.error(label, failed, kind="inspection")
                outcome = (
                    "keeping it, and any other server failing this way in this pass, until it can be read "
                    "(counted as errors; --max-age still applies)"
                )
            log.log(
                logging.WARNING if first else logging.DEBUG,
                "Cannot inspect server %s (%s); %s",
                label,
                failed,
                outcome,
                extra={**fields, "inspection_failure": failed.kind},
            )
        if verdict.decision.code is DecisionCode.HOOK_FAILED and verdict.error is not None:
            recorder.error(label, verdict.error, kind="hook")
            first = recorder.first_in_pass("hook")
            log.log(
                logging.ERROR if first else logging.DEBUG,
                "cull_arbiter_hook failed for %s; not culling it%s",
                label,
                "" if first else f" ({verdict.decision.detail})",
                exc_info=verdict.error if first else None,
                extra={**fields, "event": "hook_failed"},
            )

    def _foresee(self, user: str, server: str, matched: MatchedRule, verdict: Verdict, *, judged_here: bool) -> None:
        """Count the server's cull in the pass's forecast when the pager could not: a server it did not judge, or
        one whose user is warned, which is culled at the time the warning announced."""
        upcoming, due = self.recorder.upcoming, verdict.due
        announced = None if self.notifier is None else self.notifier.announced(user, server)
        if upcoming is None or due is None or not (judged_here or announced is not None):
            return
        if announced is not None and announced > due.at:
            due = due._replace(at=announced)
        elif verdict.acts:
            return  # culled now: a cull, not a forecast
        upcoming.add(user, server, due, _rule_label(matched))

    def _held_for_warning(
        self, notifier: Notifier, user: User, server: Server, matched: MatchedRule, verdict: Verdict, keep_read: bool
    ) -> bool:
        """Tell the warnings about the verdict on ``server`` (as judged): they warn of a cull that comes near
        (only what the judgment will cull is announced), and cancel a warning whose cull is not coming. True
        when a cull must wait for the notice a warning promised (the server is kept this pass)."""
        # The time now, not the pass's start: a warning a long pass (a hub slow after a restart) makes late must
        # still announce --warn-before from when it is sent, never a cull time already past.
        now = self.now + timedelta(seconds=trio.current_time() - self.recorder.started_at)
        wait = notifier.observe(user, server, matched, verdict, now, keep_read=keep_read)
        if wait is None:
            return False
        log.info(
            "Not culling server %s before %s: its user was warned",
            _label(user.name, server.name),
            wait.isoformat(),
            extra={"user": user.name, "server": server.name, "event": "cull_deferred"},
        )
        return True

    async def _recheck(
        self, work: Work, server: Server, verdict: Verdict, *, always: bool = False
    ) -> Verdict | Outcome:
        """The verdict to cull on, or what to report instead: see the module docstring. ``always``: read the
        user again whatever the listing's age (before a retried DELETE)."""
        if not always and trio.current_time() - work.listed_at <= RECHECK_AFTER:
            return verdict
        user, label = work.user, _label(work.user.name, server.name)
        read, fresh_user = await self._reread(user.name, label)
        if not read:
            return Outcome.FAILED
        fresh = None if fresh_user is None else fresh_user.servers.get(server.name)
        if fresh_user is None or fresh is None:
            log.debug("Server %s stopped since the listing", label, extra={"user": user.name, "server": server.name})
            return Outcome.GONE
        now = self.now + timedelta(seconds=trio.current_time() - self.recorder.started_at)
        kept_at = verdict.kept_at
        if self.notifier is not None:
            # The culler's own requests since the listing (the state read before this cull) are not activity.
            inputs = self.notifier.inputs(fresh_user, fresh, now)
            fresh, kept_at = inputs.server, kept_at or inputs.kept_at
        judged = verdict.server
        unchanged = fresh.started == judged.started and fresh.last_activity == judged.last_activity
        if unchanged and fresh.is_ready and not fresh.pending:
            return verdict
        matched = self.config.rule_table.for_server(fresh_user, fresh)
        again = await self.judge.judge(fresh_user, fresh, matched.policy, now, kept_at=kept_at)
        self.account(user.name, again)
        if again.acts:
            return again
        if self.notifier is not None:
            # What the re-read saw ends the warning's stretch now (a `cancelled` event, `used`): the proxy keeps
            # only a route's latest request, so the culler's own next request through it would hide this
            # activity from every later pass, and the old warning would then cull a server in use.
            self.notifier.observe(fresh_user, fresh, matched, again, now)
        self.recorder.culls_prevented += 1
        log.info(
            "Not culling server %s: it changed since the listing (started %s, then %s; %s)",
            label,
            _iso(server.started),
            _iso(fresh.started),
            again.decision.reason,
            extra={**decision_fields(again.decision, user.name, server.name), "event": "cull_prevented"},
        )
        return Outcome.KEPT

    async def _user_still_idle(self, work: Work) -> bool:
        """Before deleting a user on an old listing: no server running again (its last_activity cannot tell:
        the hub moves it when a server stops, and this pass stopped them)."""
        if trio.current_time() - work.listed_at <= RECHECK_AFTER:
            return True
        name = work.user.name
        read, fresh = await self._reread(name, name)
        if not read or fresh is None:
            return False  # not confirmed, or already gone: nothing to delete now
        if not fresh.servers:
            return True
        self.recorder.culls_prevented += 1
        log.info("Not deleting user %s: a server of theirs started since the listing", name, extra={"user": name})
        return False

    async def _reread(self, name: str, label: str) -> tuple[bool, User | None]:
        """Whether the user could be read again, and its model (None: the hub has it no more)."""
        self.recorder.rereads += 1
        try:
            return True, await self.hub.get_user(name)
        except HubAuthError:
            raise
        except HubError as error:
            # Not confirmed is not culled: the next pass reads the user again.
            self.recorder.error(label, error)
            log.error("Could not read %s again before culling: %s", label, error, extra={"user": name})
            return False, None


def _rule_label(matched: MatchedRule) -> str | None:
    return None if matched.rule is None else matched.label


def _iso(value: datetime | None) -> str:
    return "unknown" if value is None else value.isoformat().replace("+00:00", "Z")


def _log_kept(user: str, server: Server, decision: Decision, matched: MatchedRule) -> None:
    # A server spared by a busy kernel is worth an INFO line: the hub's data would have culled it, and that is
    # what --inspect-kernels is for. Every other kept server is DEBUG.
    level = logging.INFO if decision.code is DecisionCode.KERNEL_BUSY else logging.DEBUG
    if log.isEnabledFor(level):
        fields = {**decision_fields(decision, user, server.name), "matched_rule": matched.index}
        label = _label(user, server.name)
        log.log(level, "Not culling server %s (%s; %s)", label, decision.reason, matched.label, extra=fields)
