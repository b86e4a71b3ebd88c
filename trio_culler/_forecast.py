"""What comes next: when a server will be culled if nothing changes, and the soonest few a pass kept.

:func:`cull_time` answers for one server, purely, from the same inputs :func:`._decide.decide_server` takes, and
names the code the decision will have at that time (a forecast says ``busy_expired`` where the decision will):

- idleness: ``idle_since + timeout`` (:func:`._decide.idle_since`) when the server's kind is culled for idleness
  and no ``cull_arbiter_hook`` judges it (a hook's verdict cannot be foreseen);
- with the kernels read (``--inspect-kernels``): a busy kernel keeps its server until ``--max-busy`` after its
  cell started and the server is idle, or, without ``--max-busy``, for as long as it runs;
- age: ``started + max_age``, whatever the kind toggles say.

The judge (:mod:`._judge`) calls it for every server it keeps, so a pass, the warnings and ``--explain`` foresee
with what they decided with. :class:`Upcoming` keeps, for one pass, the ``size`` soonest within ``horizon`` in
a bounded heap (memory does not grow with the hub) and counts all of them, so a hub of 100,000 users gives a
page of "1,234 servers due within the hour; the 100 soonest: ...", not a row per user.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple

import attrs

from ._codes import DecisionCode
from ._decide import Decision, idle_since
from ._models import Server
from ._policy import Policy

if TYPE_CHECKING:
    from ._inspect import ServerActivity

__all__ = ["DEFAULT_HORIZON", "Due", "Forecast", "Upcoming", "became_due", "cull_time"]

#: How far ahead the status page looks.
DEFAULT_HORIZON = timedelta(hours=1)


class Due(NamedTuple):
    """When a server is culled, by which code, and the limit that set the time (None: a hook's verdict). A
    named tuple: one is made for nearly every server of every pass, and a frozen attrs class costs twice as much
    to build."""

    at: datetime
    code: DecisionCode
    limit: timedelta | None


@attrs.frozen(kw_only=True, order=False)
class Forecast:
    """A server that will be culled at ``cull_at`` unless it is used (or stopped) before then."""

    user: str
    server: str
    cull_at: datetime
    #: The code of the cull (a :class:`DecisionCode`, which is its string): ``idle``, ``kernels_idle``,
    #: ``busy_expired`` or ``max_age``.
    limit: str
    #: The limit that sets the time, in seconds.
    limit_seconds: float
    #: The name of the rule that set the limit; None for the global options (``--timeout``, ``--max-age``).
    rule: str | None = None


def cull_time(
    server: Server, *, policy: Policy, idle_foreseeable: bool = True, activity: ServerActivity | None = None
) -> Due | None:
    """When ``server`` would be culled if nothing changes, or None (never: exempt, pending, not ready, nothing
    that ever culls it). ``idle_foreseeable`` is False when a cull_arbiter_hook decides idleness. ``activity``:
    what inspecting the server found (None: not inspected), as :func:`decide_server` takes it."""
    if policy.exempt or server.pending or not server.is_ready:
        return None
    # Runs for every server of every pass (100,000 at a time): no list, no lambda, one value at most kept.
    best: Due | None = None
    kind_enabled = policy.cull_named_servers if server.name else policy.cull_default_servers
    if idle_foreseeable and kind_enabled:
        best = _idle_due(server, policy, activity)
    if policy.max_age is not None and server.started is not None:
        aged = server.started + policy.max_age
        # A tie goes to idleness, as the decision checks it first; so does a zero timeout, which culls an idle
        # server whatever the clocks say (a timestamp in the future counts as idle for 0 s).
        always_idle = not policy.timeout and best is not None and best.code is not DecisionCode.BUSY_EXPIRED
        if best is None or (aged < best.at and not always_idle):
            best = Due(aged, DecisionCode.MAX_AGE, policy.max_age)
    return best


def _idle_due(server: Server, policy: Policy, activity: ServerActivity | None) -> Due | None:
    since = idle_since(server, policy=policy, activity=activity)
    if since is None:
        return None
    by_kernels = activity is not None and policy.kernel_activity_only
    idle = Due(since + policy.timeout, DecisionCode.KERNELS_IDLE if by_kernels else DecisionCode.IDLE, policy.timeout)
    if activity is None or not activity.busy:
        return idle
    # A busy kernel protects its server for --max-busy after its cell started, or as long as it runs; the
    # cull then needs the idleness too, and is a busy_expired whichever of the two limits comes last.
    if policy.max_busy is None or activity.busy_since is None:
        return None
    protected_until = activity.busy_since + policy.max_busy
    if policy.timeout and idle.at >= protected_until:
        return Due(idle.at, DecisionCode.BUSY_EXPIRED, policy.timeout)
    return Due(protected_until, DecisionCode.BUSY_EXPIRED, policy.max_busy)


def became_due(
    server: Server,
    decision: Decision,
    *,
    policy: Policy,
    now: datetime,
    idle_foreseeable: bool = True,
    activity: ServerActivity | None = None,
) -> Due:
    """For a server culled now by ``decision``: when it became due by the decision's code (at most ``now``).
    Stable from one pass to the next while nothing changes, so it names an idle stretch (the warnings key on
    it). A hook's verdict has no time of its own: it is dated from the start of the idle stretch it judged."""
    if decision.code is DecisionCode.MAX_AGE and policy.max_age is not None and server.started is not None:
        return Due(min(server.started + policy.max_age, now), decision.code, policy.max_age)
    due = _idle_due(server, policy, activity) if idle_foreseeable else None
    if due is not None:
        return Due(min(due.at, now), decision.code, due.limit)
    since = idle_since(server, policy=policy, activity=activity)
    return Due(now if since is None else min(since, now), decision.code, None)


@attrs.define
class Upcoming:
    """The ``size`` soonest culls due in ``(now, now + horizon]``, and how many are due in all, by code."""

    now: datetime
    size: int
    horizon: timedelta = DEFAULT_HORIZON
    #: Every server due within the horizon, by code (:attr:`Forecast.limit`). A user the hub lists twice in
    #: one pass (offsets shifting under it) may count twice: remembering every name due would grow with the hub.
    due: Counter[str] = attrs.field(factory=Counter)
    # A max-heap on time (negated timestamps), so the latest of the kept is the one to drop.
    _heap: list[tuple[float, str, str, Forecast]] = attrs.field(factory=list)
    _keys: set[tuple[str, str]] = attrs.field(factory=set)
    _end: datetime = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._end = self.now + self.horizon

    def add(self, user: str, server: str, due: Due | None, rule: str | None = None) -> None:
        """Count a server a pass keeps, due at ``due`` (its judgment's); ``rule``: the matched rule's label."""
        # Due now means this pass culls it: that is a cull, not a forecast.
        if due is None or not self.now < due.at <= self._end:
            return
        key = (user, server)
        if key in self._keys:
            return  # the hub listed this user twice in one pass
        self.due[due.code] += 1
        # Most servers due are not kept (a full heap keeps the soonest): their Forecast is not built. The
        # (user, server) keys are unique in the heap, so the order is settled before the Forecast is reached.
        rank = (-due.at.timestamp(), user, server)
        full = len(self._heap) >= self.size
        if full and not (self._heap and rank > self._heap[0]):
            return
        limit = due.limit.total_seconds() if due.limit is not None else 0.0
        entry = (
            *rank,
            Forecast(user=user, server=server, cull_at=due.at, limit=due.code, limit_seconds=limit, rule=rule),
        )
        if full:
            dropped = heapq.heapreplace(self._heap, entry)
            self._keys.discard((dropped[1], dropped[2]))
        else:
            heapq.heappush(self._heap, entry)
        self._keys.add(key)

    @property
    def total_due(self) -> int:
        return sum(self.due.values())

    def soonest(self) -> Sequence[Forecast]:
        """The kept forecasts, soonest first."""
        return tuple(entry[3] for entry in sorted(self._heap, reverse=True))
