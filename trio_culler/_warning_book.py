"""What the warnings remember between passes: whom they warned (one :class:`WarningRecord` per server in its
stretch), the keeps users asked for, when the culler itself reached a warned server, and which servers have no
notice API. The :class:`~trio_culler._notify.Notifier` decides what to say; this book only keeps, and says how
to judge a server it knows (:meth:`WarningBook.inputs`). Every method returns at once.

**The culler's own requests are not its user's activity.** configurable-http-proxy records each request it
passes to a server (an inspection, a notice, the state read before a cull) as activity of the server's route,
and the hub folds that record into the server's ``last_activity`` every ``last_activity_interval``
(benchmarks/RESULTS.md, "Measured by hand"): left alone, each warning would move the cull time it announced, and
a warned server would never be culled. So each warned server's record remembers when the culler itself reached
it (``WarningRecord.own``, adopted at the warning from the inspection just before it); a ``last_activity`` that
the hub shows later than the one the warning was judged with, and within :data:`OWN_REQUEST_TOLERANCE` seconds
of one of those requests, is the culler's, and the judgment sees the earlier one. The price: a user's activity
that the hub had not folded in yet when the culler's request came, and that it folds together with it, is not
seen here; the judge recovers it from the server's own word where it reads the server anyway (its state before
the cull, ``api/status`` in an inspection: ``_judge``), and it stays hidden only on a server that cannot say
(README, "The culler's own requests are not its users' activity"). With ``--kernel-activity-only`` the
question does not arise: the kernels' clock never counts the culler's requests.

**A server is gone only when two complete passes in a row did not see it.** The hub pages its users by offset,
and users starting and stopping servers while a pass reads the pages shift them: a complete pass can miss a
server that still runs (benchmarks/SOAK.md, finding 2). Forgetting its warning there would make the next pass
warn it afresh, and the inspection made for that warning would restart its idle clock: a cull late by a whole
timeout. Two misses in a row by chance are rare; the price of waiting for them is that a warning of a server its
user stopped is cancelled one pass later.

Bounded: at most :data:`MAX_REMEMBERED` records of each kind (the oldest go first), a complete pass forgets
servers that it and the complete pass before it did not see, and the latest request to servers not warned yet
is kept for :data:`MAX_PENDING_OWN` servers at most.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import attrs
import trio

from ._codes import DecisionCode
from ._judge import Announced, Verdict
from ._models import Server, User
from ._warnings_now import KeptServer, StandingWarning, WarningsNow
from ._warnings_state import MAX_RECORDS, KeepRecord, LoadedState, WarningRecord, state_document

__all__ = ["MAX_PENDING_OWN", "MAX_REMEMBERED", "OWN_REQUEST_TOLERANCE", "JudgmentInputs", "WarningBook"]

#: Servers remembered as warned (and as kept) at most; the oldest go first.
MAX_REMEMBERED = MAX_RECORDS
#: Seconds between one of the culler's own requests to a server and the time the proxy recorded for it (the
#: two clocks, and the request's own time in flight): within this, a ``last_activity`` is the culler's.
OWN_REQUEST_TOLERANCE = 2.0
#: The culler's latest request to servers not warned (yet) remembered at most: a warning adopts its server's
#: moments later, in the same worker, so the latest few thousand are plenty (and a pass that inspects 100,000
#: servers does not keep a window for each).
MAX_PENDING_OWN = 4096

Key = tuple[str, str]

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


class WarningBook:
    def __init__(self, clock: Callable[[], datetime], loaded: LoadedState | None = None) -> None:
        self.clock = clock
        self.warned: dict[Key, WarningRecord] = {}
        self.kept: dict[Key, KeepRecord] = {}
        self._seen: set[Key] = set()
        #: What the last complete pass did not see: forgotten if the next complete pass does not see it either.
        self._missed: set[Key] = set()
        self._pending_own: dict[Key, tuple[datetime, datetime]] = {}
        #: Servers (by start) whose notice API answered 404: not asked again while they run.
        self._no_extension: dict[Key, datetime | None] = {}
        #: Set when what is kept changed; the state file's writer waits for it (and replaces it).
        self.changed = trio.Event()
        for record in () if loaded is None else loaded.warned:
            self.warned[record.user, record.server] = record
        for keep in () if loaded is None else loaded.kept:
            self.kept[keep.user, keep.server] = keep

    # -- how to judge a server ------------------------------------------------------------------------------

    def known(self, user: str, server: str) -> bool:
        """Whether the server was warned, or kept by its user: a worker must judge it (see :meth:`inputs`)."""
        return (user, server) in self.warned or (user, server) in self.kept

    def inputs(self, user: User, server: Server, now: datetime, *, read_keeps: bool) -> JudgmentInputs:
        """How to judge ``server`` of ``user`` at ``now``: see :class:`JudgmentInputs`. ``read_keeps``: whether
        the server's own state may be read before its cull."""
        key = (user.name, server.name)
        kept_at = self.kept_at(key, server.started)
        record = self.standing(key, server.started)
        if record is None:
            return JudgmentInputs(server, None, kept_at)
        judged = server
        seen = server.last_activity
        later = seen is not None and (record.baseline is None or seen > record.baseline)
        # The warning may have been judged with the server's own word on its activity (``_judge``), which the
        # hub has not shown yet: activity known all the same, which the passes until the cull do not read again.
        behind = record.baseline is not None and server.activity_visible and (seen is None or seen < record.baseline)
        if behind or (later and seen is not None and record.explains(seen, OWN_REQUEST_TOLERANCE)):
            judged = attrs.evolve(server, last_activity=record.baseline)
        read_keep = read_keeps and now >= record.cull_at and self.keepable(key, record, server.started)
        return JudgmentInputs(judged, Announced(record.warned_at, read_keep), kept_at)

    def keepable(self, key: Key, record: WarningRecord, started: datetime | None) -> bool:
        """Whether the warned server's user can have kept it: its own state is read before its cull (not a
        max-age cull, which no keep spares, nor a server without the extension)."""
        return record.reason != DecisionCode.MAX_AGE and not self.lacks_extension(key, started)

    def standing(self, key: Key, started: datetime | None) -> WarningRecord | None:
        """The warning of this server (by its start) that still stands: not culled, not cancelled."""
        record = self.warned.get(key)
        return None if record is None or record.settled or record.started != started else record

    def announced(self, user: str, server: str) -> datetime | None:
        """The cull time a warning announced for the server, while that warning stands."""
        record = self.warned.get((user, server))
        return None if record is None or record.settled else record.cull_at

    def kept_at(self, key: Key, started: datetime | None) -> datetime | None:
        keep = self.kept.get(key)
        return keep.kept_at if keep is not None and keep.started == started else None

    # -- what happened ---------------------------------------------------------------------------------------

    def seen(self, key: Key) -> None:
        self._seen.add(key)

    def own_request(self, user: str, server: str, start: datetime, end: datetime) -> None:
        """The culler reached ``user``'s ``server`` through the proxy between ``start`` and ``end``."""
        key = (user, server)
        record = self.warned.get(key)
        if record is not None and not record.settled:
            record.add_own(start, end)
            self.changed.set()
            return
        self._pending_own.pop(key, None)
        self._pending_own[key] = (start, end)
        if len(self._pending_own) > MAX_PENDING_OWN:
            del self._pending_own[next(iter(self._pending_own))]

    def note_keep(self, key: Key, server: Server, verdict: Verdict) -> None:
        """Remember a keep the verdict counted (the kernels' clock never shows one); forget one that the rule's
        clock shows activity after."""
        if verdict.kept_at is not None:
            known = self.kept.get(key)
            if known is None or known.kept_at != verdict.kept_at or known.started != server.started:
                self.kept[key] = KeepRecord(key[0], key[1], server.started, verdict.kept_at)
                _forget_oldest(self.kept)
                self.changed.set()
        elif key in self.kept and verdict.decision.code in _BY_ACTIVITY:
            del self.kept[key]
            self.changed.set()

    def forget_keep(self, key: Key) -> None:
        if self.kept.pop(key, None) is not None:
            self.changed.set()

    def lacks_extension(self, key: Key, started: datetime | None) -> bool:
        return key in self._no_extension and self._no_extension[key] == started

    def no_extension(self, key: Key, started: datetime | None) -> None:
        self._no_extension[key] = started
        _forget_oldest(self._no_extension)

    def warn(self, record: WarningRecord) -> None:
        """Keep a new warning, with the culler's request to its server just before (the inspection), if any."""
        key = (record.user, record.server)
        pending = self._pending_own.pop(key, None)
        if pending is not None:
            record.add_own(*pending)
        self.warned.pop(key, None)
        self.warned[key] = record
        _forget_oldest(self.warned)
        self.changed.set()

    def settle(self, record: WarningRecord, *, forget: bool) -> None:
        """The warning's stretch ended: culled (kept until no pass sees the server: a stop may still be under
        way), or cancelled (forgotten now)."""
        record.settled = True
        key = (record.user, record.server)
        if forget and self.warned.get(key) is record:
            del self.warned[key]
        self.changed.set()

    def end_pass(self, *, complete: bool) -> list[WarningRecord]:
        """After a pass: a complete one forgets the servers that neither it nor the complete pass before it saw,
        and returns their warnings that still stood (their servers were stopped by someone else)."""
        unseen: list[WarningRecord] = []
        if complete:
            missed = {key for key in (*self.warned, *self.kept, *self._no_extension) if key not in self._seen}
            gone = missed & self._missed
            self._missed = missed - gone
            for key in [key for key in self.warned if key in gone]:
                record = self.warned.pop(key)
                if not record.settled:
                    unseen.append(record)
                self.changed.set()
            for key in [key for key in self.kept if key in gone]:
                del self.kept[key]
                self.changed.set()
            for key in [key for key in self._no_extension if key in gone]:
                del self._no_extension[key]
        self._seen = set()
        self._pending_own = {}
        return unseen

    def now(self) -> WarningsNow:
        """What the book holds now, as frozen values (``_warnings_now``): read-only, for the status page."""
        standing = tuple(
            StandingWarning(
                user=record.user,
                server=record.server,
                started=record.started,
                id=record.id,
                warned_at=record.warned_at,
                cull_at=record.cull_at,
                reason=record.reason,
                kept_at=self.kept_at(key, record.started),
                no_extension=self.lacks_extension(key, record.started),
            )
            for key, record in self.warned.items()
            if not record.settled
        )
        kept = tuple(
            KeptServer(user=keep.user, server=keep.server, started=keep.started, kept_at=keep.kept_at)
            for keep in self.kept.values()
        )
        return WarningsNow(standing=standing, kept=kept, without_extension=len(self._no_extension))

    def document(self) -> dict[str, Any]:
        """The state file's document, now (see ``_warnings_state``)."""
        return state_document(self.warned.values(), self.kept.values(), self.clock())


def _forget_oldest(records: dict[Key, Any]) -> None:
    while len(records) > MAX_REMEMBERED:
        # Dicts keep insertion order: the oldest goes first.
        del records[next(iter(records))]
