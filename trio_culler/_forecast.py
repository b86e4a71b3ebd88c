"""What comes next: when each server a pass keeps would be culled if nothing changes, the soonest few kept.

A pass sees every user but acts on few; the status page wants to say which servers the *next* passes will
stop. :func:`cull_time` answers that for one server, purely, from the same policy :mod:`._decide` applies:

- idleness: ``(last_activity or started) + timeout`` when the hub shows the activity, the server's kind is
  culled for idleness, and no ``cull_arbiter_hook`` judges it (a hook's verdict cannot be foreseen);
- age: ``started + max_age``, whatever the kind toggles say (as :func:`decide_server` applies it);
- for a server whose kernels were read (``--inspect-kernels``): with ``--kernel-activity-only`` the idleness
  of its kernels and terminals (``kernels_idle``); a busy kernel keeps its server until ``--max-busy`` after
  its cell started (``max_busy``), or, without ``--max-busy``, for as long as it runs (no idleness forecast).
  The pager cannot know these: the workers forecast the servers they inspected (:meth:`Upcoming.observe_inspected`),
  and the pager leaves out those it sends to be inspected with ``--kernel-activity-only``.

:class:`Upcoming` keeps, for one pass, the ``size`` soonest of those within ``horizon`` in a bounded heap
(memory does not grow with the hub) and counts all of them, so a hub of 100,000 users gives a page of
"1,234 servers due within the hour; the 100 soonest: ...", not a row per user.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import attrs

from ._decide import idle_since
from ._inspect import inspected_every_pass
from ._models import Server, User
from ._policy import Policy

if TYPE_CHECKING:
    from ._inspect import ServerActivity
    from ._rules import MatchedRule, RuleTable

__all__ = ["DEFAULT_HORIZON", "Forecast", "Upcoming", "cull_time"]

#: How far ahead the status page looks.
DEFAULT_HORIZON = timedelta(hours=1)


@attrs.frozen(kw_only=True, order=False)
class Forecast:
    """A server that will be culled at ``cull_at`` unless it is used (or stopped) before then."""

    user: str
    server: str
    cull_at: datetime
    #: Which limit applies: ``idle`` (the timeout, from the hub's activity), ``kernels_idle`` (the timeout, from
    #: the kernels' activity), ``max_busy`` (a busy kernel's protection ends) or ``max_age``.
    limit: str
    #: That limit, in seconds.
    limit_seconds: float
    #: The name of the rule that set the limit; None for the global options (``--timeout``, ``--max-age``).
    rule: str | None = None


def cull_time(
    server: Server, *, policy: Policy, idle_foreseeable: bool = True, activity: ServerActivity | None = None
) -> tuple[datetime, str, timedelta] | None:
    """When ``server`` would be culled if nothing changes: ``(when, limit, limit value)``, or None (never:
    pending, not ready, nothing that ever culls it). ``idle_foreseeable`` is False when a cull_arbiter_hook
    decides idleness. ``activity``: what inspecting the server found (None: not inspected, or it failed), as
    :func:`decide_server` takes it. An exempt policy (a rule with ``cull = false``) never culls."""
    if policy.exempt or server.pending or not server.is_ready:
        return None
    # Runs for every server of every pass (100,000 at a time): no list, no lambda, one tuple at most kept.
    best: tuple[datetime, str, timedelta] | None = None
    kind_enabled = policy.cull_named_servers if server.name else policy.cull_default_servers
    if idle_foreseeable and kind_enabled:
        best = _idle_cull_time(server, policy, activity)
    if policy.max_age is not None and server.started is not None:
        aged = server.started + policy.max_age
        if best is None or aged < best[0]:
            best = (aged, "max_age", policy.max_age)
    return best


def _idle_cull_time(
    server: Server, policy: Policy, activity: ServerActivity | None
) -> tuple[datetime, str, timedelta] | None:
    """The idleness cull of a server, as :func:`._decide.decide_server` will judge it later."""
    since = idle_since(server, policy=policy, activity=activity)
    if since is None:
        return None
    by_kernels = activity is not None and policy.kernel_activity_only
    idle = (since + policy.timeout, "kernels_idle" if by_kernels else "idle", policy.timeout)
    if activity is None or not activity.busy:
        return idle
    # A busy kernel protects its server for --max-busy after its cell started, or as long as it runs.
    if policy.max_busy is None or activity.busy_since is None:
        return None
    protected_until = activity.busy_since + policy.max_busy
    return idle if idle[0] >= protected_until else (protected_until, "max_busy", policy.max_busy)


@attrs.define
class Upcoming:
    """The ``size`` soonest culls due in ``(now, now + horizon]``, and how many are due in all, by limit."""

    policy: Policy
    now: datetime
    size: int
    horizon: timedelta = DEFAULT_HORIZON
    idle_foreseeable: bool = True
    #: The rules, when there are any: each server's limits are those of the rule that matches it.
    rules: RuleTable | None = None
    #: ``--inspect-kernels``: the servers a worker inspects with --kernel-activity-only are its to forecast.
    inspect_kernels: bool = False
    #: Every server due within the horizon, by limit (:attr:`Forecast.limit`), kept or not. A user the hub
    #: lists twice in one pass (offsets shifting under it) may count twice: remembering every name due would
    #: grow with the hub.
    due: Counter[str] = attrs.field(factory=Counter)
    # A max-heap on time (negated timestamps), so the latest of the kept is the one to drop.
    _heap: list[tuple[float, str, str, Forecast]] = attrs.field(factory=list)
    _keys: set[tuple[str, str]] = attrs.field(factory=set)

    def observe(self, user: User) -> None:
        """Look at every server of ``user`` (called once per user the pass reads)."""
        for server in user.servers.values():
            matched = self.rules.for_server(user, server) if self.rules else None
            policy = self.policy if matched is None else matched.policy
            if self.inspect_kernels and inspected_every_pass(server, policy):
                continue  # its kernels decide: forecast by the worker that reads them (observe_inspected)
            self._add(user, server, matched, cull_time(server, policy=policy, idle_foreseeable=self.idle_foreseeable))

    def observe_inspected(
        self, user: User, server: Server, matched: MatchedRule, activity: ServerActivity | None
    ) -> None:
        """Forecast a server a worker inspected and kept: from its kernels' ``activity``, or from the hub's data
        when they could not be read. Called for every server kept after an inspection with
        --kernel-activity-only (which :meth:`observe` leaves out), and for one a busy kernel spared (which the
        hub's data made due now, so :meth:`observe` did not count it either)."""
        when = cull_time(server, policy=matched.policy, idle_foreseeable=self.idle_foreseeable, activity=activity)
        self._add(user, server, matched, when)

    def _add(
        self, user: User, server: Server, matched: MatchedRule | None, when: tuple[datetime, str, timedelta] | None
    ) -> None:
        # Due now means this pass culls it: that is a cull, not a forecast.
        if when is None or not self.now < when[0] <= self.now + self.horizon:
            return
        key = (user.name, server.name)
        if key in self._keys:
            return  # the hub listed this user twice in one pass
        self.due[when[1]] += 1
        # Most servers due are not kept (a full heap keeps the soonest): their Forecast is not built. The
        # (user, server) keys are unique in the heap, so the order is settled before the Forecast is reached.
        rank = (-when[0].timestamp(), user.name, server.name)
        full = len(self._heap) >= self.size
        if full and not (self._heap and rank > self._heap[0]):
            return
        entry = (
            *rank,
            Forecast(
                user=user.name,
                server=server.name,
                cull_at=when[0],
                limit=when[1],
                limit_seconds=when[2].total_seconds(),
                rule=None if matched is None or matched.rule is None else matched.label,
            ),
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
