"""One judgment per server: the pass's workers, the pager's triage, the warnings and ``--explain`` all call it.

::

    hub's data --+
    matched rule +--> Judge.judge() --> Verdict: the decision now, when the server will be culled if nothing
    inspection  -+         |                     changes (the forecast from the same inputs), what was read
    arbiter hook-+    Judge.prejudge(): the same, purely, when nothing needs to be awaited (the pager's triage)

The decisions themselves stay pure (:mod:`._decide`, :mod:`._forecast`); the judge holds what waits: the
``cull_arbiter_hook`` and the server's own answer about its kernels (``--inspect-kernels``). The order:

1. exempt, pending, not ready: kept, nothing asked; past ``--max-age``: culled, nothing asked (no hook, no
   inspection can change a hard lifetime);
2. the hook, asked once per judgment, about the clock the rules use: the hub's, or with
   ``--kernel-activity-only`` the kernels' (so after the inspection); never about an unknown idle time, nor
   for a server whose kind is not culled for idleness. A hook that raises, or answers anything but a bool,
   keeps the server (``hook_failed``) and is an error: it can never vouch for a cull;
3. the inspection, when it could change the outcome: a server the hub's data culls for idleness (a busy
   kernel spares it), one about to be warned (only a cull the kernels allow is announced), every server with
   ``--kernel-activity-only``. Its failures fall in two kinds (:data:`DECIDED_FROM_HUB_DATA`): a server that
   is not serving at all is decided from the hub's data, as a dead process should be; one whose answer
   cannot be had or read is kept (``inspection_failed``) and is an error, ``--max-age`` still culling it.

A keep is activity. A user who asked to keep their server (the "Keep running" of trio-culler-notice) used it
at that time, on whichever clock the rule reads: the hub's ``last_activity``, or with
``--kernel-activity-only`` the kernels' and terminals'. The judgment takes two kinds of keep: one already known
(``kept_at``, remembered by the warnings since an earlier pass), and, for a server whose user was warned
(``announced``), the server's own state, read before the cull (``GET notice``): a keep that arrived after the
warning counts, at the time it arrived (never later than ``now``: the server's clock is its user's). Neither
changes a cull for ``--max-age``, which no activity can prevent. A state that cannot be read is no keep: the
cull goes ahead at the time announced.

The server's own word on its activity. configurable-http-proxy keeps only the latest request of each route, so
a request of the culler's own (a notice, an inspection) hides its user's activity since the hub last folded the
proxy's record in; the warnings then explain the hub's value away as the culler's (``_warning_book``). jupyter_
server keeps its own ``last_activity``, which the culler's requests never move: where the judgment reads the
server anyway (its state before the cull, ``GET notice``; the inspection, ``api/status``), a time it reports
later than the hub's counts as activity then, on the hub's clock (never with ``--kernel-activity-only``'s,
never later than ``now``, never against ``--max-age``): the same trust as a keep, since the user's own server
can only spare itself. One that cannot be read is counted and ignored (``report_unread``).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple

import attrs

from ._codes import DecisionCode
from ._config import Policy
from ._decide import Action, Decision, decide_server, effective_idle_time, idle_since, server_idle_time
from ._forecast import Due, became_due, cull_time
from ._inspect import InspectionFailed, ServerActivity, inspected_every_pass
from ._models import Server, User
from ._notice import Keep, NoticeFailed, ReadKeep, ServerState

if TYPE_CHECKING:
    from ._config import ArbiterHook, Config

__all__ = ["DECIDED_FROM_HUB_DATA", "Announced", "Inspect", "Judge", "Verdict"]

#: Ask one server about its kernels (and terminals, with --kernel-activity-only); raises InspectionFailed.
Inspect = Callable[[User, Server], Awaitable[ServerActivity]]

#: The inspection failures after which a server is decided from the hub's data, and why. Any other kind
#: (timeout, forbidden, status, unreadable, a credential that cannot be had, a kind added later) keeps the
#: server this pass: a failure to look must never cull a busy server.
DECIDED_FROM_HUB_DATA: Mapping[str, str] = {
    # Connection refused or no route to the server, the proxy's 502/503, the hub's 424 "not running":
    # nothing is serving there, so no kernel can be busy.
    "unreachable": "nothing serves there",
    # Not a jupyter_server (RStudio, a custom app): it has no kernels to show, and a user whose server
    # answered 404 on purpose gains nothing the hub's data does not already give.
    "not_found": "not a jupyter_server",
    # No full_url from the hub and no --public-url: the culler has no address for the server.
    "no_url": "no address for the server",
}


class Verdict(NamedTuple):
    """A server judged: what to do now, when it will be culled if nothing changes, and what was read. A named
    tuple: the pager makes one for every server of every pass (100,000 at a time), and a frozen attrs class
    costs three times as much to build."""

    #: The server as the judgment saw it (its ``started`` tells a restarted server from this one).
    server: Server
    decision: Decision
    #: For a server kept: when it will be culled if nothing changes (None: never). For one culled now: when it
    #: became due (at most the judgment's ``now``).
    due: Due | None
    #: What the server said about itself, or why it could not say.
    activity: ServerActivity | None = None
    inspection: InspectionFailed | None = None
    #: The cull_arbiter_hook's answer, when it was asked and answered a bool.
    arbiter: bool | None = None
    #: What made a kept server an error of its pass: the hook's failure, or the inspection's.
    error: Exception | None = None
    #: The keep that counted as the server's latest activity (it moved the idle time), or None.
    kept_at: datetime | None = None
    #: What the warned server's own state said (``announced`` with ``read_keep``): its last keep, or None.
    keep: Keep | None = None
    #: Why that state could not be read (then there was no keep).
    keep_failure: NoticeFailed | None = None
    #: The server's own last activity (its state, or ``api/status``) when it counted: later than the hub's.
    reported_at: datetime | None = None
    #: Its state was read and held no last activity that could be read (counted, never acted on).
    report_unread: bool = False

    @property
    def acts(self) -> bool:
        return self.decision.acts


class Announced(NamedTuple):
    """A server whose user was warned: the warning's time, and whether the judgment is the one before its cull
    (``read_keep``: the server's own state is read for a keep after ``warned_at``)."""

    warned_at: datetime
    read_keep: bool = False


@attrs.frozen
class Judge:
    hook: ArbiterHook | None = None
    #: Whether the hook takes the user model as a fourth argument.
    hook_takes_user: bool = False
    #: How to ask a server about its kernels; None without --inspect-kernels.
    inspect: Inspect | None = None
    #: A server due within this is about to be warned (``--warn-before`` plus one pass interval): it is
    #: inspected first, when its kernels could spare it.
    warn_within: timedelta = timedelta(0)
    #: How to read a warned server's keep (``_notice.NoticeClient.read_keep``); None: keeps are not read.
    read_keep: ReadKeep | None = None

    @classmethod
    def for_config(cls, config: Config, inspect: Inspect | None = None, *, read_keep: ReadKeep | None = None) -> Judge:
        return cls(
            hook=config.cull_arbiter_hook,
            hook_takes_user=config.arbiter_takes_user,
            inspect=inspect if config.inspect_kernels else None,
            warn_within=timedelta(seconds=config.warn_before + config.interval) if config.warn_before else timedelta(0),
            read_keep=read_keep,
        )

    def prejudge(self, server: Server, policy: Policy, now: datetime) -> Verdict | None:
        """The verdict, when nothing has to be awaited for it (no hook to ask, no server to inspect); else None.
        Pure: the pager's triage calls it for every server of every pass."""
        if self.hook is None and self.inspect is None:
            # Nothing to ask, nothing to read (most cullers): the decision and its forecast, at once.
            return self._verdict(server, policy, now, decide_server(server, policy=policy, now=now))
        settled = self._settled(server, policy, now)
        if settled is not None:
            return settled
        if self._asks_hook(server, policy, now):
            return None
        decision = decide_server(server, policy=policy, now=now)
        if self._inspects(server, policy, decision, now):
            return None
        return self._verdict(server, policy, now, decision)

    async def judge(
        self,
        user: User,
        server: Server,
        policy: Policy,
        now: datetime,
        *,
        kept_at: datetime | None = None,
        announced: Announced | None = None,
    ) -> Verdict:
        """Judge ``server`` of ``user`` under ``policy`` (its matched rule's) at ``now``. Never raises for the
        hook or the server: their failures are in the verdict. ``kept_at``: a keep its user asked for earlier;
        ``announced``: its user was warned (see the module docstring)."""
        settled = self._settled(server, policy, now)
        if settled is not None:
            return settled
        keep: Keep | None = None
        keep_failure: NoticeFailed | None = None
        state: ServerState | None = None
        if announced is not None and announced.read_keep and self.read_keep is not None:
            try:
                state = await self.read_keep(user.name, server)
            except NoticeFailed as failed:
                keep_failure = failed
            keep = None if state is None else state.keep
            if keep is not None and keep.requested_at > announced.warned_at:
                # The server's clock is its user's: a keep dated later than now counts as now.
                asked = min(keep.requested_at, now)
                kept_at = asked if kept_at is None else max(kept_at, asked)
        reported = None if state is None else state.last_activity
        verdict = await self._judge(user, server, policy, now, kept_at, announced is not None, reported)
        # The verdict describes the server as the hub has it; a keep is reported beside it.
        unread = state is not None and state.activity_unread
        return verdict._replace(server=server, keep=keep, keep_failure=keep_failure, report_unread=unread)

    async def _judge(
        self,
        user: User,
        original: Server,
        policy: Policy,
        now: datetime,
        kept_at: datetime | None,
        announced: bool,
        reported: datetime | None,
    ) -> Verdict:
        server = _with_reported(_with_keep(original, kept_at), reported, now)
        by_kernels = self.inspect is not None and policy.kernel_activity_only
        arbiter: bool | None = None
        if not by_kernels and self._asks_hook(server, policy, now):
            arbiter, error = await self._ask(user, server, policy, now, None)
            if error is not None:
                return self._kept(server, policy, now, DecisionCode.HOOK_FAILED, error)
        decision = decide_server(server, policy=policy, now=now, arbiter_says_cull=arbiter)
        activity: ServerActivity | None = None
        failure: InspectionFailed | None = None
        if self.inspect is not None and self._inspects(server, policy, decision, now, announced=announced):
            try:
                activity = _activity_with_keep(await self.inspect(user, original), kept_at)
            except InspectionFailed as failed:
                if failed.kind not in DECIDED_FROM_HUB_DATA:
                    return self._kept(server, policy, now, DecisionCode.INSPECTION_FAILED, failed, inspection=failed)
                failure = failed
            if activity is not None and activity.reported_at is not None:
                server = _with_reported(server, activity.reported_at, now)
        asked_after = by_kernels and self._asks_hook(server, policy, now, activity)
        if asked_after:
            arbiter, error = await self._ask(user, server, policy, now, activity)
            if error is not None:
                return self._kept(server, policy, now, DecisionCode.HOOK_FAILED, error, activity=activity)
        if activity is not None or asked_after:
            decision = decide_server(server, policy=policy, now=now, arbiter_says_cull=arbiter, activity=activity)
        verdict = self._verdict(server, policy, now, decision, activity=activity, inspection=failure, arbiter=arbiter)
        if kept_at is not None and _keep_counted(original, policy, activity, kept_at):
            verdict = verdict._replace(kept_at=kept_at)
        if server.last_activity != _with_keep(original, kept_at).last_activity:
            verdict = verdict._replace(reported_at=server.last_activity)
        return verdict

    def _settled(self, server: Server, policy: Policy, now: datetime) -> Verdict | None:
        """Exempt, pending or not ready (kept), or past --max-age (culled): nothing to ask, nothing to read. The
        hook is not asked about a hard lifetime: with one, such a cull is always max_age."""
        if not (policy.exempt or server.pending or not server.is_ready or _over_age(server, policy, now)):
            return None
        arbiter = False if self.hook is not None else None
        decision = decide_server(server, policy=policy, now=now, arbiter_says_cull=arbiter)
        return self._verdict(server, policy, now, decision)

    def _asks_hook(self, server: Server, policy: Policy, now: datetime, activity: ServerActivity | None = None) -> bool:
        if self.hook is None or not _kind_enabled(server, policy):
            return False
        if self.inspect is not None and policy.kernel_activity_only and activity is None:
            # Its idle time is the kernels' once they are read (or the hub's when they cannot be): asked then.
            return True
        return effective_idle_time(server, now, policy=policy, activity=activity)[0] is not None

    def _inspects(
        self, server: Server, policy: Policy, decision: Decision, now: datetime, *, announced: bool = False
    ) -> bool:
        """Whether the server's own kernels could change ``decision`` (made from the hub's data, and the hook's
        verdict when it was asked about the hub's clock) or the warning about it. A server already warned is
        not asked again before its cull: every request through the proxy is activity to the hub."""
        if self.inspect is None or not _kind_enabled(server, policy):
            return False  # kernels only spare an idleness cull, or make one
        if inspected_every_pass(server, policy) or decision.code is DecisionCode.IDLE:
            return True
        if not self.warn_within or self.hook is not None or announced:
            return False
        due = cull_time(server, policy=policy)
        return due is not None and due.code is DecisionCode.IDLE and due.at - now <= self.warn_within

    async def _ask(
        self, user: User, server: Server, policy: Policy, now: datetime, activity: ServerActivity | None
    ) -> tuple[bool | None, Exception | None]:
        """The hook's answer about the idle time the rules use, or the reason it has none."""
        assert self.hook is not None
        inactive, _age = effective_idle_time(server, now, policy=policy, activity=activity)
        if inactive is None:
            return None, None
        limit = _limit_seconds(policy.timeout)
        try:
            if self.hook_takes_user:
                result = self.hook(inactive, limit, server.model, user.model)
            else:
                result = self.hook(inactive=inactive, inactive_limit=limit, server=server.model)
            if inspect.isawaitable(result):
                result = await result
        except Exception as error:
            return None, error
        if not isinstance(result, bool):
            # "yes", 0.3, None: an answer that is not a verdict cannot vouch for a cull, nor be read as one.
            return None, TypeError(f"cull_arbiter_hook returned {result!r:.80}, not True or False")
        return result, None

    def _verdict(
        self,
        server: Server,
        policy: Policy,
        now: datetime,
        decision: Decision,
        *,
        activity: ServerActivity | None = None,
        inspection: InspectionFailed | None = None,
        arbiter: bool | None = None,
    ) -> Verdict:
        foreseeable = self.hook is None
        due: Due | None
        if decision.acts:
            due = became_due(server, decision, policy=policy, now=now, idle_foreseeable=foreseeable, activity=activity)
        else:
            due = cull_time(server, policy=policy, idle_foreseeable=foreseeable, activity=activity)
        return Verdict(server, decision, due, activity, inspection, arbiter)

    def _kept(
        self,
        server: Server,
        policy: Policy,
        now: datetime,
        code: DecisionCode,
        error: Exception,
        *,
        activity: ServerActivity | None = None,
        inspection: InspectionFailed | None = None,
    ) -> Verdict:
        """A server kept because its judgment could not be made; if that stays so, --max-age culls it."""
        inactive, age = server_idle_time(server, now)
        text = str(error) if isinstance(error, InspectionFailed) else f"{type(error).__name__}: {error}"
        detail = text.rstrip(": ")[:300]
        decision = Decision(Action.KEEP, code, inactive, age, detail)
        due = cull_time(server, policy=policy, idle_foreseeable=False)
        return Verdict(server, decision, due, activity, inspection, None, error)


def _with_keep(server: Server, kept_at: datetime | None) -> Server:
    """The server with its user's keep as its latest activity on the hub's clock (when later than the hub's)."""
    if kept_at is None or not server.activity_visible:
        return server
    if server.last_activity is not None and server.last_activity >= kept_at:
        return server
    return attrs.evolve(server, last_activity=kept_at)


def _with_reported(server: Server, reported: datetime | None, now: datetime) -> Server:
    """The server with its own report of its last activity, when later than the hub's (and never later than
    ``now``: the server's clock is its user's)."""
    return server if reported is None else _with_keep(server, min(reported, now))


def _activity_with_keep(activity: ServerActivity, kept_at: datetime | None) -> ServerActivity:
    """What the server said about itself, with its user's keep as activity (``--kernel-activity-only``'s clock)."""
    if kept_at is None or (activity.kept_at is not None and activity.kept_at >= kept_at):
        return activity
    return attrs.evolve(activity, kept_at=kept_at)


def _keep_counted(server: Server, policy: Policy, activity: ServerActivity | None, kept_at: datetime) -> bool:
    """Whether the keep is later than what the rule's clock shows without it."""
    if activity is not None:
        activity = attrs.evolve(activity, kept_at=None)
    since = idle_since(server, policy=policy, activity=activity)
    return since is None or since < kept_at


def _kind_enabled(server: Server, policy: Policy) -> bool:
    return policy.cull_named_servers if server.name else policy.cull_default_servers


def _over_age(server: Server, policy: Policy, now: datetime) -> bool:
    return policy.max_age is not None and server.started is not None and now - server.started >= policy.max_age


def _limit_seconds(delta: timedelta) -> float | int:
    """A limit in seconds as the original passes it to the hook: a whole number is an int."""
    seconds = delta.total_seconds()
    return int(seconds) if seconds.is_integer() else seconds
