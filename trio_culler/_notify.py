"""Warnings before a cull, and what became of each: events with ids (``_cull_events``) told to
``c.IdleCuller.warn_hook``, POSTed to ``--warn-url`` and delivered to the warned server itself
(trio-culler-notice, ``_notice``); never in a pass's way.

::

    worker   Notifier.inputs(user, server)  -> the server as its judgment must see it, whether its user was
                                               warned (and the keep to read, at its cull time), a keep known
             Judge.judge(...)
             Notifier.observe(...)          -> warning / cancelled events; until when a cull must wait
             stop_server(...) -> Notifier.stopped(...)  -> culled / cancelled("stopped")
    pass end Notifier.end_pass(complete)    -> cancelled("stopped") for warned servers a complete pass no longer
                                               saw; the counts for the report
    tasks    deliveries (``_deliver``): hook + webhook, server notices; the state file, in a thread

What the warnings remember (whom they warned, keeps, the culler's own requests to warned servers: why those
are not activity) is the :class:`~trio_culler._warning_book.WarningBook`'s; this module decides what to say and
sends it. Every method here returns at once: a pass calls them freely; the deliveries queue (bounded) and are
carried out by tasks of their own, whose failures are counted and logged, never raised.

**Timing.** A server is warned at the first pass that finds its cull due within ``--warn-before`` plus one pass
interval (the next pass would be too late to give the full notice), and never culled before
``warned_at + warn_before``: the warning announces ``max(due, warned_at + warn_before)``, and that is when the
cull happens (at the first pass from then on). Activity moves the due time: a new stretch, the old warning
cancelled, a new warning with a new id when the new due time comes near.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import trio

from ._codes import DecisionCode
from ._config import Config
from ._cull_events import CullEvent, log_event, notice_for, stretch_id
from ._deliver import (
    DELIVERY_TASKS,
    DELIVERY_TIMEOUT,
    MAX_QUEUED,
    NOTICE_TASKS,
    ServerDelivery,
    deliver_to_operator,
    deliver_to_servers,
    hook_hears_events,
    open_webhook_client,
    write_state_when_changed,
)
from ._judge import Inspect, Verdict
from ._models import Server, User
from ._notice import NoticeClient, NoticeFailed
from ._rules import MatchedRule
from ._warning_book import JudgmentInputs, WarningBook
from ._warnings_now import WarningsNow
from ._warnings_state import LoadedState, WarningRecord, read_state_file

if TYPE_CHECKING:
    from ._credentials import ServerCredentials
    from ._hub import HubClient
    from ._inspect import ServerActivity

__all__ = [
    "DELIVERY_TIMEOUT",
    "CullEvent",
    "JudgmentInputs",
    "NoticeCounts",
    "Notifier",
    "NotifierStatistics",
    "open_notifier",
]

log = logging.getLogger("trio_culler")

_Key = tuple[str, str]
#: Judgments that say nothing about the stretch: the warning stands, and the cull waits for a real judgment.
_UNDECIDED = frozenset(
    {DecisionCode.PENDING, DecisionCode.NOT_READY, DecisionCode.HOOK_FAILED, DecisionCode.INSPECTION_FAILED}
)
#: Judgments that spare a warned server for a reason of their own: the cancellation says which.
_SPARING = frozenset(
    {DecisionCode.KERNEL_BUSY, DecisionCode.EXEMPT, DecisionCode.DEFAULT_DISABLED, DecisionCode.NAMED_DISABLED}
)


def _utc_now() -> datetime:
    return datetime.now(UTC)


@attrs.frozen
class NotifierStatistics:
    #: Events delivered to the hook and the webhook, and deliveries that failed.
    sent: int
    failed: int
    #: Events waiting for delivery (to the hook and webhook, and to servers).
    queued: int
    #: Servers remembered as warned.
    remembered: int
    #: Deliveries under way (a hook or POST not yet returned): with ``queued``, the warnings still pending.
    delivering: int = 0


@attrs.frozen
class NoticeCounts:
    """What the warnings did since the last pass report."""

    sent: int = 0
    failed: int = 0
    #: Events by kind: ``warning``, ``cancelled``, ``culled``.
    events: dict[str, int] = attrs.Factory(dict)
    #: Notices delivered to servers (PUT and DELETE), failed, and servers that answered 404 (no extension).
    notices_delivered: int = 0
    notices_failed: int = 0
    notices_without_extension: int = 0
    #: Warned servers spared because their users asked to keep them.
    keeps: int = 0


class Notifier:
    """What the culler says about the warnings, to whom, and what it counts. Its methods never wait."""

    def __init__(
        self,
        config: Config,
        *,
        operator: trio.MemorySendChannel[CullEvent] | None = None,
        servers: trio.MemorySendChannel[ServerDelivery] | None = None,
        clock: Callable[[], datetime] = _utc_now,
        loaded: LoadedState | None = None,
    ) -> None:
        self.config = config
        self.warn_before = timedelta(seconds=config.warn_before)
        #: A server due within this is warned now: the next pass would come too late for the full notice.
        self.window = timedelta(seconds=config.warn_before + config.interval)
        self.dry_run = config.dry_run
        self.by_kernels = config.inspect_kernels
        self.clock = clock
        self.book = WarningBook(clock, loaded)
        self._operator = operator
        self._servers = servers
        self._hook_hears_all = hook_hears_events(config.warn_hook)
        self._notices_on = servers is not None
        self._logged: set[str] = set()
        self.sent = 0
        self.failed = 0
        self.delivering = 0
        self._counts: Counter[str] = Counter()
        self._without_extension: set[_Key] = set()

    # -- what a pass asks ----------------------------------------------------------------------------------------

    def statistics(self) -> NotifierStatistics:
        queued = 0
        for channel in (self._operator, self._servers):
            if channel is not None:
                queued += channel.statistics().current_buffer_used
        return NotifierStatistics(self.sent, self.failed, queued, len(self.book.warned), self.delivering)

    def begin_pass(self, *, notices: bool) -> None:
        """A pass starts; ``notices``: whether server notices may be delivered (the role may mint tokens)."""
        self._notices_on = notices and self._servers is not None
        self._logged.clear()

    def known(self, user: str, server: str) -> bool:
        """Whether the server was warned, or kept by its user: a worker must judge it (see :meth:`inputs`)."""
        return self.book.known(user, server)

    def inputs(self, user: User, server: Server, now: datetime) -> JudgmentInputs:
        """How to judge ``server`` of ``user`` at ``now`` (``_warning_book.JudgmentInputs``)."""
        return self.book.inputs(user, server, now, read_keeps=self._keeps_read)

    def announced(self, user: str, server: str) -> datetime | None:
        """The cull time a warning announced for the server, while that warning stands."""
        return self.book.announced(user, server)

    def now(self) -> WarningsNow:
        """The warnings that stand, the keeps and the servers without the notice API, as frozen values: what
        the status page shows, taken between passes (``_warnings_now``)."""
        return self.book.now()

    def recording(self, inspect: Inspect) -> Inspect:
        """``inspect``, with each request's time remembered as the culler's own (``_warning_book``)."""

        async def recorded(user: User, server: Server) -> ServerActivity:
            started = self.clock()
            try:
                return await inspect(user, server)
            finally:
                self.book.own_request(user.name, server.name, started, self.clock())

        return recorded

    def own_request(self, user: str, server: str, start: datetime, end: datetime) -> None:
        """The culler reached ``user``'s ``server`` through the proxy between ``start`` and ``end``."""
        self.book.own_request(user, server, start, end)

    @property
    def _keeps_read(self) -> bool:
        """Whether warned servers' own states are read for keeps (notices on, not a dry run)."""
        return self._notices_on and not self.dry_run

    def observe(
        self,
        user: User,
        server: Server,
        matched: MatchedRule,
        verdict: Verdict,
        now: datetime,
        *,
        keep_read: bool = False,
    ) -> datetime | None:
        """Account for ``server`` (as judged: :meth:`inputs`) and its verdict: warn of a cull that comes near,
        cancel a warning whose cull is not coming. Returns the time until which a cull must wait (the pass
        keeps the server), or None when it may go ahead (or there is none). ``keep_read``: the judgment read
        the server's own state for a keep (:meth:`inputs` said to, the cull time having come)."""
        key = (user.name, server.name)
        book = self.book
        book.seen(key)
        book.note_keep(key, server, verdict)
        if verdict.keep_failure is not None:
            self.notice_failed(verdict.keep_failure, user.name, server.name, server.started)
        elif verdict.report_unread:
            # A state without the server's own last activity that can be read: counted, never logged (the text is
            # the server's, and an older extension leaves it out on every warned server).
            self._counts["notice_failed"] += 1
        record = book.warned.get(key)
        if record is not None and record.started != server.started and not record.settled:
            # Another server by that name: the warned one was stopped (and this one started) by someone else.
            self._end(record, "stopped", now, user=user, server=None)
        record = book.warned.get(key)
        if record is not None and record.started == server.started:
            if record.settled:
                return None  # culled already, still stopping: nothing more to say
            due = verdict.due
            if verdict.decision.code in _UNDECIDED or (due is not None and due.at == record.due):
                if not verdict.acts:
                    return None
                if now < record.cull_at:
                    return record.cull_at
                # The cull time came while this pass judged the server, after its keep would have been read: a
                # keep its user asked for is unseen. The next pass reads the state, then culls or spares it.
                unread = not keep_read and self._keeps_read and self.book.keepable(key, record, server.started)
                return record.cull_at if unread else None
            detail = self._why_ended(record, verdict)
            self._end(record, detail, now, user=user, server=server, verdict=verdict)
        due = verdict.due
        if matched.policy.exempt or due is None or (not verdict.acts and due.at - now > self.window):
            return None
        return self._warn(user, server, matched, verdict, now)

    def stopped(self, user: str, server: str, *, culled: bool, gone: bool) -> None:
        """The pass stopped the server (``culled``), or found it gone at its DELETE (``gone``)."""
        key = (user, server)
        self.book.forget_keep(key)
        record = self.book.warned.get(key)
        if record is None or record.settled:
            return
        if culled:
            self.book.settle(record, forget=False)
            self._emit(self._event("culled", record, self.clock(), None))
        elif gone:
            self._end(record, "stopped", self.clock(), user=None, server=None)

    def end_pass(self, *, complete: bool) -> NoticeCounts:
        """After a pass: a complete one cancels the warnings of servers that neither it nor the complete pass
        before it saw (stopped by someone else) and forgets them. Returns what the warnings did since the last
        call, for the pass report."""
        unseen = self.book.end_pass(complete=complete)
        now = self.clock()
        for record in unseen:
            self._end(record, "stopped", now, user=None, server=None)
        counts = NoticeCounts(
            sent=self.sent,
            failed=self.failed,
            events={event: self._counts[event] for event in ("warning", "cancelled", "culled")},
            notices_delivered=self._counts["notice_delivered"],
            notices_failed=self._counts["notice_failed"],
            notices_without_extension=len(self._without_extension),
            keeps=self._counts["keep"],
        )
        self.sent = self.failed = 0
        self._counts.clear()
        self._without_extension = set()
        return counts

    # -- what the delivery tasks report ----------------------------------------------------------------------

    def notice_delivered(self) -> None:
        self._counts["notice_delivered"] += 1

    def notice_failed(self, failure: NoticeFailed, user: str, server: str, started: datetime | None) -> None:
        """A notice (or a state) the server did not take: a server without the extension is counted once,
        never logged; any other failure counted, and logged once per pass for each kind."""
        key = (user, server)
        if failure.kind == "no_extension":
            self.book.no_extension(key, started)
            self._without_extension.add(key)
            return
        self._counts["notice_failed"] += 1
        first = failure.kind not in self._logged
        self._logged.add(failure.kind)
        label = f"{user}/{server}" if server else user
        log.log(
            logging.WARNING if first else logging.DEBUG,
            "Could not deliver a notice to server %s (%s); the cull goes ahead at the time announced%s",
            label,
            failure,
            " (said once per pass for each kind of failure; all are counted)" if first else "",
            extra={"user": user, "server": server, "event": "notice_failed", "notice_failure": failure.kind},
        )

    # -- what to say -------------------------------------------------------------------------------------------

    def _why_ended(self, record: WarningRecord, verdict: Verdict) -> str:
        if verdict.kept_at is not None and verdict.kept_at > record.warned_at:
            return "kept"
        code = verdict.decision.code
        if code in _SPARING:
            return str(code)
        due = verdict.due
        return "used" if due is None or due.at > record.due else "changed"

    def _warn(
        self, user: User, server: Server, matched: MatchedRule, verdict: Verdict, now: datetime
    ) -> datetime | None:
        key = (user.name, server.name)
        due = verdict.due
        assert due is not None
        cull_at = max(due.at, now + self.warn_before)
        record = WarningRecord(
            user=user.name,
            server=server.name,
            started=server.started,
            id=stretch_id(user.name, server.name, server.started, due.at),
            warned_at=now,
            due=due.at,
            cull_at=cull_at,
            reason=str(due.code),
            # What the warning was judged with: the server's own word when it counted (later passes do not read
            # it again before the cull, and must find the same due time).
            baseline=server.last_activity if verdict.reported_at is None else verdict.reported_at,
        )
        self.book.warn(record)
        event = self._event("warning", record, now, verdict, user=user, server=server)
        notice = None
        if self._notices_on and not self.book.lacks_extension(key, server.started):
            kept_at = self.book.kept_at(key, server.started)
            by_kernels = self.by_kernels and matched.policy.kernel_activity_only
            notice = notice_for(event, verdict, matched, server, by_kernels=by_kernels, kept_at=kept_at)
        self._emit(event, ServerDelivery("put", user.name, server, notice) if notice is not None else None)
        return cull_at if verdict.acts and now < cull_at else None

    def _end(
        self,
        record: WarningRecord,
        detail: str,
        now: datetime,
        *,
        user: User | None,
        server: Server | None,
        verdict: Verdict | None = None,
    ) -> None:
        """Cancel ``record``'s warning (``detail`` says why) and forget it, withdrawing the notice from a server
        that still runs (a keep withdrew it already; a server stopped has none left)."""
        key = (record.user, record.server)
        self.book.settle(record, forget=True)
        kept_at = verdict.kept_at if verdict is not None and detail == "kept" else None
        event = self._event("cancelled", record, now, verdict, user=user, server=server, detail=detail, kept_at=kept_at)
        withdraw = None
        still_holds = server is not None and detail not in ("kept", "stopped") and self._notices_on
        if still_holds and server is not None and not self.book.lacks_extension(key, server.started):
            withdraw = ServerDelivery("delete", record.user, server, None, record.id)
        if detail == "kept":
            self._counts["keep"] += 1
        self._emit(event, withdraw)

    def _event(
        self,
        kind: str,
        record: WarningRecord,
        now: datetime,
        verdict: Verdict | None,
        *,
        user: User | None = None,
        server: Server | None = None,
        detail: str | None = None,
        kept_at: datetime | None = None,
    ) -> CullEvent:
        inactive = None if verdict is None else verdict.decision.inactive
        return CullEvent(
            event=kind,
            user=record.user,
            server=record.server,
            id=record.id,
            warned_at=record.warned_at,
            cull_at=record.cull_at,
            reason=record.reason,
            idle_seconds=None if inactive is None else inactive.total_seconds(),
            at=now,
            detail=detail,
            kept_at=kept_at,
            user_model={"name": record.user} if user is None else user.model,
            server_model={"name": record.server} if server is None else server.model,
        )

    def _emit(self, event: CullEvent, delivery: ServerDelivery | None = None) -> None:
        self._counts[event.event] += 1
        payload = event.payload()
        # The log line's fields: the payload's, the id named for what it is among the culler's other lines.
        fields = {key: payload[key] for key in ("user", "server", "event", "cull_at", "reason", "detail")}
        log_event(event, fields | {"warning_id": event.id}, dry_run=self.dry_run)
        if self.dry_run:
            return
        wanted = self.config.warn_url is not None or (
            self.config.warn_hook is not None and (event.event == "warning" or self._hook_hears_all)
        )
        if wanted and self._operator is not None:
            self._send(self._operator, event, event.label)
        if delivery is not None and self._servers is not None:
            self._send(self._servers, delivery, event.label)

    def _send(self, channel: trio.MemorySendChannel[Any], item: Any, label: str) -> None:
        try:
            channel.send_nowait(item)
        except (trio.WouldBlock, trio.BrokenResourceError):
            self.failed += 1
            log.error("Warning queue full (%d): dropped an event for %s", MAX_QUEUED, label, extra={"event": "dropped"})


@asynccontextmanager
async def open_notifier(
    config: Config,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    hub: HubClient | None = None,
    credentials: ServerCredentials | None = None,
    clock: Callable[[], datetime] = _utc_now,
) -> AsyncIterator[Notifier | None]:
    """A :class:`Notifier` with its delivery tasks, or None when no warnings are configured. Server notices
    need ``hub`` and ``credentials`` (and ``config.warn_servers``). The state file (``config.state_file``) is
    read now and written after each pass that changed it. On exit the events still queued get up to
    :data:`DELIVERY_TIMEOUT` seconds, then are abandoned; the state file is written once more."""
    if not config.warn_before:
        yield None
        return
    loaded = LoadedState()
    path = None if config.dry_run else config.state_file
    if path:
        loaded = await trio.to_thread.run_sync(read_state_file, path)
        if loaded.problem is not None:
            log.warning("Warnings' state: %s", loaded.problem, extra={"event": "state_file"})
        if not loaded.writable:
            log.warning(
                "Warnings are kept in memory only: a restart forgets them (give --state-file a path of its own)",
                extra={"event": "state_file"},
            )
            path = None
    operator_send, operator_receive = trio.open_memory_channel[CullEvent](MAX_QUEUED)
    notices = config.warn_servers and hub is not None and credentials is not None
    servers_send, servers_receive = trio.open_memory_channel[ServerDelivery](MAX_QUEUED)
    notifier = Notifier(
        config, operator=operator_send, servers=servers_send if notices else None, clock=clock, loaded=loaded
    )
    async with open_webhook_client(config, transport) as client, trio.open_nursery() as nursery:
        async with operator_receive, servers_receive:
            for _ in range(DELIVERY_TASKS):
                nursery.start_soon(deliver_to_operator, notifier, config, client, operator_receive.clone())
            if hub is not None and credentials is not None and notices:
                notice_client = NoticeClient(hub, config, credentials, own_request=notifier.own_request, clock=clock)
                for _ in range(NOTICE_TASKS):
                    nursery.start_soon(deliver_to_servers, notifier, notice_client, servers_receive.clone())
        writer = trio.CancelScope()
        if path:
            nursery.start_soon(write_state_when_changed, notifier.book, path, writer)
        try:
            yield notifier
        finally:
            operator_send.close()
            servers_send.close()
            writer.cancel()
            nursery.cancel_scope.deadline = trio.current_time() + DELIVERY_TIMEOUT
