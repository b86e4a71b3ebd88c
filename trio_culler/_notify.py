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
                                               saw; the counts for the report; the state file marked for writing
    tasks    deliveries (``_deliver``): hook + webhook, server notices; the state file, in a thread

Every method here returns at once: a pass calls them freely; the deliveries queue (bounded) and are carried out
by tasks of their own, whose failures are counted and logged, never raised.

**Timing.** A server is warned at the first pass that finds its cull due within ``--warn-before`` plus one pass
interval (the next pass would be too late to give the full notice), and never culled before
``warned_at + --warn-before``: the warning announces ``max(due, warned_at + warn_before)``, and that is when the
cull happens (at the first pass from then on). Activity moves the due time: a new stretch, the old warning
cancelled, a new warning with a new id when the new due time comes near.

**The culler's own requests are not its user's activity.** Every request through configurable-http-proxy (an
inspection, a notice delivered, the state read before a cull) is recorded by the proxy as activity on the
server's route, and the hub folds that into the server's ``last_activity`` (every ``last_activity_interval``):
left alone, each warning would move the cull time it announced, and a warned server would never be culled. So
each warned server remembers when the culler itself reached it (``WarningRecord.own``); a ``last_activity``
that the hub shows later than the one the warning was judged with, and that falls within
:data:`OWN_REQUEST_TOLERANCE` seconds of one of those requests, is the culler's, and the judgment sees the
earlier one. The price: a user's activity that the hub had not folded in yet when the culler's request came,
and which the hub then folds together with it, is not seen (README, "A warning before a cull"). With
``--kernel-activity-only`` none of this arises: the kernels' clock never counts the culler's requests.
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
from ._cull_events import CullEvent, notice_for, stretch_id
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
from ._judge import Announced, Inspect, Verdict
from ._models import Server, User
from ._notice import NoticeClient, NoticeFailed
from ._rules import MatchedRule
from ._warnings_state import MAX_RECORDS, KeepRecord, LoadedState, WarningRecord, read_state_file, state_document

if TYPE_CHECKING:
    from ._credentials import ServerCredentials
    from ._hub import HubClient
    from ._inspect import ServerActivity

__all__ = [
    "DELIVERY_TIMEOUT",
    "MAX_REMEMBERED",
    "OWN_REQUEST_TOLERANCE",
    "CullEvent",
    "JudgmentInputs",
    "NoticeCounts",
    "Notifier",
    "NotifierStatistics",
    "open_notifier",
]

log = logging.getLogger("trio_culler")

#: Servers remembered as warned (and as kept) at most; the oldest go first.
MAX_REMEMBERED = MAX_RECORDS
#: Seconds between one of the culler's own requests to a server and the time the proxy recorded for it (the
#: two clocks, and the request's own time in flight): within this, a ``last_activity`` is the culler's.
OWN_REQUEST_TOLERANCE = 2.0

_Key = tuple[str, str]
#: Judgments that say nothing about the stretch: the warning stands, and the cull waits for a real judgment.
_UNDECIDED = frozenset(
    {DecisionCode.PENDING, DecisionCode.NOT_READY, DecisionCode.HOOK_FAILED, DecisionCode.INSPECTION_FAILED}
)
#: Judgments that spare a warned server for a reason of their own: the cancellation says which.
_SPARING = frozenset(
    {DecisionCode.KERNEL_BUSY, DecisionCode.EXEMPT, DecisionCode.DEFAULT_DISABLED, DecisionCode.NAMED_DISABLED}
)
#: Judgments made from the server's activity, which say whether a remembered keep is still its latest.
_BY_ACTIVITY = frozenset(
    {
        DecisionCode.ACTIVE,
        DecisionCode.KERNELS_ACTIVE,
        DecisionCode.IDLE,
        DecisionCode.KERNELS_IDLE,
        DecisionCode.KERNEL_BUSY,
        DecisionCode.BUSY_EXPIRED,
    }
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
    #: Deliveries under way.
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


@attrs.frozen
class JudgmentInputs:
    """What a worker judges a server with: the server as its judgment must see it (the culler's own requests
    taken out of its ``last_activity``), whether its user was warned, and a keep already known."""

    server: Server
    announced: Announced | None = None
    kept_at: datetime | None = None

    @property
    def remembered(self) -> bool:
        """The pager's verdict did not see this: the worker judges the server again."""
        return self.announced is not None or self.kept_at is not None


class Notifier:
    """Whom the culler warned, what it said, and what became of it. Its methods never wait."""

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
        self._operator = operator
        self._servers = servers
        self._hook_hears_all = hook_hears_events(config.warn_hook)
        self._warned: dict[_Key, WarningRecord] = {}
        self._kept: dict[_Key, KeepRecord] = {}
        self._seen: set[_Key] = set()
        #: The culler's own requests this pass to servers not warned (yet): a warning adopts them.
        self._own_this_pass: dict[_Key, list[tuple[datetime, datetime]]] = {}
        #: Servers (by start) whose notice API answered 404: not asked again while they run.
        self._no_extension: dict[_Key, datetime | None] = {}
        self._notices_on = servers is not None
        self._logged: set[str] = set()
        self.sent = 0
        self.failed = 0
        self.delivering = 0
        self._counts: Counter[str] = Counter()
        self._without_extension: set[_Key] = set()
        #: Set when the state changed; the state file's writer waits for it.
        self.changed = trio.Event()
        for record in () if loaded is None else loaded.warned:
            self._warned[record.user, record.server] = record
        for keep in () if loaded is None else loaded.kept:
            self._kept[keep.user, keep.server] = keep

    # -- what a pass asks ----------------------------------------------------------------------------------------

    def statistics(self) -> NotifierStatistics:
        queued = 0
        for channel in (self._operator, self._servers):
            if channel is not None:
                queued += channel.statistics().current_buffer_used
        return NotifierStatistics(self.sent, self.failed, queued, len(self._warned), self.delivering)

    def begin_pass(self, *, notices: bool) -> None:
        """A pass starts; ``notices``: whether server notices may be delivered (the role may mint tokens)."""
        self._notices_on = notices and self._servers is not None
        self._logged.clear()

    def known(self, user: str, server: str) -> bool:
        """Whether the server was warned, or kept by its user: a worker must judge it (see :meth:`inputs`)."""
        return (user, server) in self._warned or (user, server) in self._kept

    def inputs(self, user: User, server: Server, now: datetime) -> JudgmentInputs:
        """How to judge ``server`` of ``user`` at ``now``: see :class:`JudgmentInputs`."""
        key = (user.name, server.name)
        keep = self._kept.get(key)
        kept_at = keep.kept_at if keep is not None and keep.started == server.started else None
        record = self._warned.get(key)
        if record is None or record.settled or record.started != server.started:
            return JudgmentInputs(server, None, kept_at)
        judged = server
        seen = server.last_activity
        later = seen is not None and (record.baseline is None or seen > record.baseline)
        if later and seen is not None and record.explains(seen, OWN_REQUEST_TOLERANCE):
            judged = attrs.evolve(server, last_activity=record.baseline)
        read_keep = (
            now >= record.cull_at
            and not self.dry_run
            and self._notices_on
            and record.reason != DecisionCode.MAX_AGE
            and not self._lacks_extension(key, server.started)
        )
        return JudgmentInputs(judged, Announced(record.warned_at, read_keep), kept_at)

    def announced(self, user: str, server: str) -> datetime | None:
        """The cull time a warning announced for the server, while that warning stands."""
        record = self._warned.get((user, server))
        return None if record is None or record.settled else record.cull_at

    def recording(self, inspect: Inspect) -> Inspect:
        """``inspect``, with each request's time remembered as the culler's own (see the module docstring)."""

        async def recorded(user: User, server: Server) -> ServerActivity:
            started = self.clock()
            try:
                return await inspect(user, server)
            finally:
                self.own_request(user.name, server.name, started, self.clock())

        return recorded

    def own_request(self, user: str, server: str, start: datetime, end: datetime) -> None:
        """The culler reached ``user``'s ``server`` through the proxy between ``start`` and ``end``."""
        key = (user, server)
        record = self._warned.get(key)
        if record is not None and not record.settled:
            record.add_own(start, end)
            self.changed.set()
        else:
            self._own_this_pass.setdefault(key, []).append((start, end))

    def observe(
        self, user: User, server: Server, matched: MatchedRule, verdict: Verdict, now: datetime
    ) -> datetime | None:
        """Account for ``server`` (as judged: :meth:`inputs`) and its verdict: warn of a cull that comes near,
        cancel a warning whose cull is not coming. Returns the time until which a cull must wait (the pass
        keeps the server), or None when it may go ahead (or there is none)."""
        key = (user.name, server.name)
        self._seen.add(key)
        self._note_keep(key, server, verdict)
        if verdict.keep_failure is not None:
            self.notice_failed(verdict.keep_failure, user.name, server.name, server.started)
        record = self._warned.get(key)
        if record is not None and record.started != server.started:
            # Another server by that name: the warned one was stopped (and this one started) by someone else.
            self._end(record, "stopped", now, user=user, server=None)
            record = None
        if record is not None:
            if record.settled:
                return None  # culled already, still stopping: nothing more to say
            due = verdict.due
            if verdict.decision.code in _UNDECIDED or (due is not None and due.at == record.due):
                return record.cull_at if verdict.acts and now < record.cull_at else None
            detail = self._why_ended(record, verdict)
            self._end(record, detail, now, user=user, server=server, verdict=verdict)
        due = verdict.due
        if matched.policy.exempt or due is None or (not verdict.acts and due.at - now > self.window):
            return None
        return self._warn(user, server, matched, verdict, now)

    def stopped(self, user: str, server: str, *, culled: bool, gone: bool) -> None:
        """The pass stopped the server (``culled``), or found it gone at its DELETE (``gone``)."""
        key = (user, server)
        self._kept.pop(key, None)
        record = self._warned.get(key)
        if record is None or record.settled:
            return
        if culled:
            record.settled = True
            self._emit(self._event("culled", record, self.clock(), None))
            self.changed.set()
        elif gone:
            self._end(record, "stopped", self.clock(), user=None, server=None)

    def end_pass(self, *, complete: bool) -> NoticeCounts:
        """After a pass: a complete one cancels the warnings of servers it no longer saw (stopped by someone
        else) and forgets them. Returns what the warnings did since the last call, for the pass report."""
        if complete:
            now = self.clock()
            for key, record in list(self._warned.items()):
                if key not in self._seen:
                    if not record.settled:
                        self._end(record, "stopped", now, user=None, server=None)
                    self._warned.pop(key, None)
                    self.changed.set()
            for key in [key for key in self._kept if key not in self._seen]:
                del self._kept[key]
                self.changed.set()
            for key in [key for key in self._no_extension if key not in self._seen]:
                del self._no_extension[key]
        self._seen = set()
        self._own_this_pass = {}
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
            self._no_extension[key] = started
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
            "" if first else " (and so for other servers failing this way in this pass)",
            extra={"user": user, "server": server, "event": "notice_failed", "notice_failure": failure.kind},
        )

    def records(self) -> dict[str, Any]:
        """The state file's document, now (see ``_warnings_state``)."""
        return state_document(self._warned.values(), self._kept.values(), self.clock())

    # -- the bookkeeping ----------------------------------------------------------------------------------------

    def _lacks_extension(self, key: _Key, started: datetime | None) -> bool:
        return key in self._no_extension and self._no_extension[key] == started

    def _note_keep(self, key: _Key, server: Server, verdict: Verdict) -> None:
        if verdict.kept_at is not None:
            known = self._kept.get(key)
            if known is None or known.kept_at != verdict.kept_at or known.started != server.started:
                self._kept[key] = KeepRecord(key[0], key[1], server.started, verdict.kept_at)
                self._forget_oldest(self._kept)
                self.changed.set()
        elif key in self._kept and verdict.decision.code in _BY_ACTIVITY:
            # The rule's clock shows activity after the keep (or the server is another one): the keep is history.
            del self._kept[key]
            self.changed.set()

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
            baseline=server.last_activity,
            own=self._own_this_pass.pop(key, [])[-8:],
        )
        self._warned.pop(key, None)
        self._warned[key] = record
        self._forget_oldest(self._warned)
        self.changed.set()
        event = self._event("warning", record, now, verdict, user=user, server=server)
        notice = None
        if self._notices_on and not self._lacks_extension(key, server.started):
            keep = self._kept.get(key)
            kept_at = keep.kept_at if keep is not None and keep.started == server.started else None
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
        if self._warned.get(key) is record:
            del self._warned[key]
        record.settled = True
        self.changed.set()
        kept_at = verdict.kept_at if verdict is not None and detail == "kept" else None
        event = self._event("cancelled", record, now, verdict, user=user, server=server, detail=detail, kept_at=kept_at)
        withdraw = None
        still_holds = server is not None and detail not in ("kept", "stopped") and self._notices_on
        if still_holds and server is not None and not self._lacks_extension(key, server.started):
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
        fields = {
            "user": event.user,
            "server": event.server,
            "event": event.event,
            "warning_id": event.id,
            "cull_at": event.payload()["cull_at"],
            "reason": event.reason,
            "detail": event.detail,
        }
        _log_event(event, fields, dry_run=self.dry_run)
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

    @staticmethod
    def _forget_oldest(records: dict[_Key, Any]) -> None:
        while len(records) > MAX_REMEMBERED:
            # Dicts keep insertion order: the oldest goes first.
            del records[next(iter(records))]


def _log_event(event: CullEvent, fields: dict[str, Any], *, dry_run: bool) -> None:
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
            nursery.start_soon(write_state_when_changed, notifier, path, writer)
        try:
            yield notifier
        finally:
            operator_send.close()
            servers_send.close()
            writer.cancel()
            nursery.cancel_scope.deadline = trio.current_time() + DELIVERY_TIMEOUT
