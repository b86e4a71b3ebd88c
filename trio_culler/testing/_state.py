"""What the fake hub holds: its users, their servers (and the kernels and terminals those run), and the tokens
it minted for users. Plain mutable attrs records; the modules beside this one read and change them."""

from __future__ import annotations

from datetime import datetime

import attrs

__all__ = ["FakeKernel", "FakeServer", "FakeTerminal", "FakeToken", "FakeUser", "is_ready"]


@attrs.define
class FakeKernel:
    id: str
    execution_state: str = "idle"  # "busy" while a cell runs
    last_activity: datetime | None = None
    name: str = "python3"


@attrs.define
class FakeTerminal:
    name: str
    last_activity: datetime | None = None


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
    # The notice API (trio-culler-notice, see _notices): whether the server runs it, the notice it holds (the JSON
    # object last put) and the last keep its user asked for ({"notice_id": ..., "requested_at": ...}).
    notices: bool = True
    notice: dict[str, object] | None = None
    keep: dict[str, object] | None = None
    # The server's own last activity, as jupyter_server keeps it (its user's requests, kernels, terminals; never
    # the culler's untracked ones), answered by api/status and the notice API's state; None: since its start.
    own_activity: datetime | None = None
    # configurable-http-proxy's record of the route: the time of its LATEST request only, which the hub folds
    # into last_activity (FakeHub.fold_activity, or at once: FakeHub.proxy_records_activity).
    proxy_activity: datetime | None = None

    @property
    def reported_activity(self) -> datetime | None:
        """What the server answers as its ``last_activity`` (jupyter_server counts its start too)."""
        return self.own_activity if self.own_activity is not None else self.started


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
    #: What the user's roles grant (the limit of the tokens minted for them); None: JupyterHub's default
    #: ``user`` role (everything on their own account and servers), plus the ``admin`` role for an admin.
    scopes: frozenset[str] | None = None


@attrs.define
class FakeToken:
    """A token the hub minted for a user (``POST /users/{name}/tokens``)."""

    id: str
    user: str
    scopes: frozenset[str]
    note: str
    created: datetime
    #: By the hub's clock (what its answer says); None: never expires.
    expires_at: datetime | None
    #: ``trio.current_time()`` from which the hub refuses it (what the fake really checks); None: never.
    refused_from: float | None
    token: str = attrs.field(repr=False)


def is_ready(user: FakeUser) -> bool:
    return any(s.ready for s in user.servers.values())
