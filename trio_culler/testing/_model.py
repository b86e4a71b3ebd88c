"""The fake hub's state: its users and their servers, as plain mutable attrs records."""

from __future__ import annotations

from datetime import datetime

import attrs

from ._singleuser import FakeKernel, FakeTerminal

__all__ = ["FakeServer", "FakeUser", "is_ready"]


@attrs.define
class FakeServer:
    name: str  # "" is the default server
    started: datetime | None
    last_activity: datetime | None
    pending: str | None = None  # None | "spawn" | "stop"
    ready: bool = True
    stop_latency: float | None = None  # overrides FakeHub.stop_latency for this server
    # What the single-user server answers at api/kernels and api/terminals; kernels=None: not a jupyter_server.
    kernels: list[FakeKernel] | None = attrs.Factory(list)
    terminals: list[FakeTerminal] = attrs.Factory(list)


@attrs.define
class FakeUser:
    name: str
    created: datetime | None
    last_activity: datetime | None
    admin: bool = False
    # ACTIVE servers only (ready or pending), as the hub reports them
    servers: dict[str, FakeServer] = attrs.Factory(dict)
    # named servers that were stopped but not removed: they still exist at the hub
    stopped_named: set[str] = attrs.Factory(set)
    id: int = 0  # insertion order; listings are ordered by id


def is_ready(user: FakeUser) -> bool:
    return any(s.ready for s in user.servers.values())
