"""Stops the hub answered 202 ("still stopping"), followed until a later pass sees each one done.

A pass lists users with a *ready* server, and a server that is stopping is not ready: its absence from the next
listing says nothing. So after each pass the hub answered, the culler asks for the user of each stop it still
follows (``GET /users/{name}``, a few requests at most): no server by that name, or one with no ``stop`` pending,
means the stop is done (the hub marks a server stopped even when its spawner's stop failed). The report says which,
and the status page stops calling those culls pending.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from ._errors import HubError
from ._report import PassReport

if TYPE_CHECKING:
    from ._hub import HubClient

__all__ = ["StopsUnderWay"]

log = logging.getLogger("trio_culler")

#: Stops followed at most (the oldest are dropped first), and asked about after one pass.
MAX_FOLLOWED = 1000
MAX_ASKED_PER_PASS = 100


class StopsUnderWay:
    def __init__(self) -> None:
        # Insertion-ordered: the oldest stop is dropped first, and asked about first.
        self._followed: dict[tuple[str, str], None] = {}

    def __len__(self) -> int:
        return len(self._followed)

    def follow(self, report: PassReport) -> None:
        """Follow every stop of ``report`` the hub answered 202."""
        for cull in report.culls:
            if cull.outcome == "pending" and cull.server is not None:
                key = (cull.user, cull.server)
                self._followed.pop(key, None)
                self._followed[key] = None
                if len(self._followed) > MAX_FOLLOWED:
                    del self._followed[next(iter(self._followed))]

    async def confirm(self, hub: HubClient) -> tuple[tuple[str, str], ...]:
        """Ask the hub about the stops followed (the oldest :data:`MAX_ASKED_PER_PASS`); return those done, which
        are no longer followed. A question that fails leaves its stop followed, for the next pass."""
        done: list[tuple[str, str]] = []

        async def ask(user: str, server: str) -> None:
            try:
                model = await hub.get_user(user)
            except HubError as error:
                log.debug("Could not ask whether %s/%s stopped: %s", user, server, error)
                return
            if model is not None and not model.servers_visible:
                return  # a token that may not see servers cannot tell
            running = None if model is None else model.servers.get(server)
            if running is None or running.pending != "stop":
                done.append((user, server))

        async with trio.open_nursery() as nursery:
            for user, server in list(self._followed)[:MAX_ASKED_PER_PASS]:
                nursery.start_soon(ask, user, server)
        for key in done:
            self._followed.pop(key, None)
        return tuple(done)
