"""What the status page remembers for each user: their last culls, and the last judgment of their servers that
only a pass could make.

The page's list of recent culls (``--status-history``, 100 by default) is everyone's: on a large hub a user's cull
falls out of it within minutes, when the next hundred are culled. "Why was my server stopped?" is asked later
than that, so :class:`UserRecord` keeps each user's own: the last :data:`CULLS_PER_USER` culls of each of the
:data:`USERS_KEPT` users culled most recently. A new cull moves its user to the recent end; the user culled
least recently is forgotten first, whatever anyone reads (reading protects nothing, so no visitor can keep a
user in, or push one out, by looking).

Beside the culls, the newest :class:`~._judgments.ServerJudgment` of each of the last :data:`JUDGMENTS_KEPT`
servers a worker judged (kernels read, or the ``cull_arbiter_hook`` asked), so that the page can show what the
pass decided where it cannot decide itself.

Memory is bounded by these three numbers, not by the hub: ``benchmarks/RESULTS.md``-style figures are in the
README ("The status page"), and ``tests/test_history.py`` measures them with ``tracemalloc``. Everything runs in
the culler's one trio thread: a pass folds its report in (:meth:`UserRecord.observe`) without awaiting, and the
page reads between two checkpoints, so neither sees the other half-done.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from ._judgments import ServerJudgment
    from ._report import CullRecord

__all__ = ["CULLS_PER_USER", "JUDGMENTS_KEPT", "USERS_KEPT", "UserRecord", "UserRecordStatistics"]

#: Users whose culls are remembered: those culled most recently.
USERS_KEPT = 10_000
#: Culls remembered for each of them, newest first.
CULLS_PER_USER = 5
#: Servers whose last judgment by a pass is remembered (only those a worker judged: kernels or a hook).
JUDGMENTS_KEPT = 10_000


@attrs.frozen
class UserRecordStatistics:
    users: int
    culls: int
    judgments: int


class UserRecord:
    def __init__(
        self, *, users: int = USERS_KEPT, culls_per_user: int = CULLS_PER_USER, judgments: int = JUDGMENTS_KEPT
    ) -> None:
        if min(users, culls_per_user, judgments) < 1:
            raise ValueError("a user record keeps at least one of each")
        self.users = users
        self.culls_per_user = culls_per_user
        self.judgments_kept = judgments
        self._culls: OrderedDict[str, deque[CullRecord]] = OrderedDict()
        self._judgments: OrderedDict[tuple[str, str], ServerJudgment] = OrderedDict()
        # The servers of each user that have a judgment: what a user's view lists when the hub cannot be read.
        self._judged_servers: dict[str, set[str]] = {}

    def statistics(self) -> UserRecordStatistics:
        return UserRecordStatistics(
            users=len(self._culls),
            culls=sum(len(culls) for culls in self._culls.values()),
            judgments=len(self._judgments),
        )

    def add_culls(self, culls: Iterable[CullRecord]) -> None:
        """Remember culls, given oldest first (the order a pass's report holds them in)."""
        for cull in culls:
            kept = self._culls.get(cull.user)
            if kept is None:
                kept = self._culls[cull.user] = deque(maxlen=self.culls_per_user)
                if len(self._culls) > self.users:
                    self._culls.popitem(last=False)
            else:
                self._culls.move_to_end(cull.user)
            kept.appendleft(cull)

    def add_judgments(self, judgments: Iterable[ServerJudgment]) -> None:
        for judgment in judgments:
            key = (judgment.user, judgment.server)
            self._judgments.pop(key, None)
            self._judgments[key] = judgment
            self._judged_servers.setdefault(judgment.user, set()).add(judgment.server)
            if len(self._judgments) > self.judgments_kept:
                (user, server), _dropped = self._judgments.popitem(last=False)
                servers = self._judged_servers[user]
                servers.discard(server)
                if not servers:
                    del self._judged_servers[user]

    def confirm_stops(self, done: frozenset[tuple[str, str]]) -> None:
        """Culls still ``pending`` whose stop a later pass saw done are ``stopped`` now."""
        for user in {user for user, _server in done}:
            kept = self._culls.get(user)
            if kept is None:
                continue
            for index, cull in enumerate(kept):
                if cull.outcome == "pending" and (cull.user, cull.server) in done:
                    kept[index] = attrs.evolve(cull, outcome="stopped")

    def culls_of(self, user: str) -> tuple[CullRecord, ...]:
        """The user's remembered culls, newest first."""
        return tuple(self._culls.get(user, ()))

    def judgments_of(self, user: str) -> dict[str, ServerJudgment]:
        """The remembered judgments of the user's servers, by server name."""
        return {server: self._judgments[(user, server)] for server in sorted(self._judged_servers.get(user, ()))}
