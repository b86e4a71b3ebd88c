"""A user's model, read from the hub when they look at their view of the page: bounded in time, requests and memory.

The page's user view shows each running server as it is now, so it reads the user (``GET /users/{name}``, one
request) with a :class:`~.._hub.HubClient`, the culler's own client (its token, its error mapping, its caps on
what it reads, its retries) opened for the page with a limiter of its own (:data:`HUB_CONCURRENCY`), so that a
reader never waits behind a pass's queue of requests and never adds more than that to what the hub sees in
flight. What bounds the rest:

- **time**: a view waits for the hub at most :data:`HUB_DEADLINE` seconds, then shows what the culler remembers
  and says that the hub did not answer;
- **requests**: an answer (or the failure to get one) is reused for :data:`FRESH_SECONDS`, so a user refreshing
  their page, or with ten tabs open, costs the hub one request per :data:`FRESH_SECONDS`; two views of the same
  user at once share one request. Only logged-in users reach this (the app asks nothing for an anonymous
  visitor), each within their own budget at the page's pacer;
- **memory**: at most :data:`USERS_CACHED` users' answers, each expiring after :data:`FRESH_SECONDS`.

The name asked for is the one the hub gave at login (in the page's signed cookie) or for a token; nothing a
visitor types picks whom the culler reads.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import attrs
import trio

from .._errors import HubError
from .._expiring import ExpiringMap
from .._hub import HubClient
from .._models import User

__all__ = ["FRESH_SECONDS", "HUB_CONCURRENCY", "HUB_DEADLINE", "USERS_CACHED", "Lookup", "UserLookup"]

log = logging.getLogger("trio_culler.web")

#: The longest a view waits for the hub.
HUB_DEADLINE = 3.0
#: How long an answer (or a failure) is reused.
FRESH_SECONDS = 10.0
#: Users' answers remembered at once.
USERS_CACHED = 1024
#: The page's requests to the hub in flight at once (its own limiter, not the passes').
HUB_CONCURRENCY = 2


@attrs.frozen
class Lookup:
    """What the hub said about one user, when it was asked."""

    #: The user, when the hub answered; None when it has no such user, or did not answer (``problem`` says).
    user: User | None
    #: When the hub was asked (wall clock).
    asked_at: datetime
    #: Why the hub's answer is missing, in words for the user; None when it answered.
    problem: str | None = None


class UserLookup:
    def __init__(
        self, hub: HubClient, *, deadline: float = HUB_DEADLINE, fresh: float = FRESH_SECONDS, size: int = USERS_CACHED
    ) -> None:
        self.hub = hub
        self.deadline = deadline
        self.fresh = fresh
        self._answers: ExpiringMap[str, Lookup] = ExpiringMap(size=size, lifetime=fresh, clock=trio.current_time)
        # One request per user at a time; the others wait for it (at most `deadline`).
        self._under_way: dict[str, trio.Event] = {}
        self.requests = 0

    async def read(self, name: str) -> Lookup:
        answer = self._answers.get(name)
        if answer is not None:
            return answer
        under_way = self._under_way.get(name)
        if under_way is not None:
            with trio.move_on_after(self.deadline):
                await under_way.wait()
            return self._answers.get(name) or self._late()
        done = self._under_way[name] = trio.Event()
        try:
            answer = await self._ask(name)
            self._answers.put(name, answer)
            return answer
        finally:
            del self._under_way[name]
            done.set()

    async def _ask(self, name: str) -> Lookup:
        asked_at = datetime.now(UTC)
        self.requests += 1
        with trio.move_on_after(self.deadline):
            try:
                return Lookup(await self.hub.get_user(name), asked_at)
            except HubError as error:
                # The error's text is the hub client's, redacted there; the user sees only its kind.
                log.warning("Status page: could not read user %s from the hub: %s", name, error, extra={"user": name})
                return Lookup(None, asked_at, f"the hub could not be read ({error.kind})")
        log.warning("Status page: the hub did not answer for user %s within %g s", name, self.deadline)
        return self._late(asked_at)

    def _late(self, asked_at: datetime | None = None) -> Lookup:
        return Lookup(None, asked_at or datetime.now(UTC), f"the hub did not answer within {self.deadline:g} s")
