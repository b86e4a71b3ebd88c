"""FakeHub: the simulated JupyterHub itself: its settings, its ways in, and the one request handler that routes
each request to the module that answers it.

The package docstring (``trio_culler.testing``) says how to use it. Nothing beside this module imports it: each
piece takes what it needs as arguments (``_listing``, ``_stops``, ``_tokens``, ``_singleuser``, ``_population``,
``_loopback``), so the dependencies run one way, towards ``_state``.
"""

from __future__ import annotations

import secrets
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from functools import partial

import attrs
import httpx
import trio

from ._listing import Listing
from ._loopback import CONNECTION_ID, serve_loopback
from ._notices import notice_answer, record_keep
from ._nursery import open_helper_nursery
from ._permissions import FULL_SCOPES, TokenScopes, covers, token_model
from ._population import populate
from ._render import Json, error, user_model
from ._routes import Route, SingleUserRoute, json_body, parse_route, parse_single_user_route, request_kind
from ._singleuser import answer, credential_kind, presented_token, reaches
from ._state import FakeServer, FakeToken, FakeUser
from ._statistics import FakeHubStatistics, RequestLog
from ._stops import Stops
from ._tokens import TokenRegistry

__all__ = ["FakeHub"]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _scope_set(scopes: Iterable[str]) -> frozenset[str]:
    return frozenset(scopes)


#: The methods each endpoint of the hub's API answers.
_ALLOWED = {
    "version": {"GET"},
    "self": {"GET"},
    "users": {"GET"},
    "user": {"GET", "DELETE"},
    "server": {"DELETE"},
    "tokens": {"POST"},
    "token": {"DELETE"},
}


@attrs.define(kw_only=True, eq=False, slots=False, repr=False, on_setattr=attrs.setters.NO_OP)
class FakeHub:
    """A simulated JupyterHub; see the package docstring for how to reach it."""

    version: str = "5.2.1"
    token: str = "fake-hub-token"
    #: False: a JupyterHub < 2.0, which ignores offset/limit.
    paginate: bool = True
    default_page_size: int = 50
    max_page_size: int = 200
    stop_latency: float = 0.0
    delete_user_latency: float = 0.0
    list_latency: float = 0.0
    slow_stop_timeout: float = 10.0
    named_servers: bool = True
    #: The hub's "now", for timestamps it makes itself (user creation, tokens).
    clock: Callable[[], datetime] = _utc_now
    #: Seconds a single-user server takes to answer api/kernels or api/terminals.
    server_latency: float = 0.0
    #: The hub's public_url: when set, server models carry ``full_url`` (else ``null``, as JupyterHub does).
    public_url: str | None = None
    #: The culler token's scopes: the hub hides user-model keys and refuses requests by the unfiltered ones;
    #: its single-user servers accept the token only with ``access:servers``. Settable while serving: a
    #: test can fix the culler's role between two passes.
    scopes: frozenset[str] = attrs.field(default=FULL_SCOPES, converter=_scope_set)
    #: Whether ``GET /user`` lists them; False is a hub before 2.0, which cannot say.
    reports_scopes: bool = True
    #: JupyterHub's ``token_expires_in_max_seconds``: a longer ``expires_in`` is a 400; None: no maximum.
    token_expires_in_max_seconds: int | None = None
    #: False: single-user servers answer 403 to every credential.
    server_access: bool = attrs.field(default=True, init=False)
    #: True: the proxy records each request it passes to a single-user server that is answered below 300 or
    #: has a body (configurable-http-proxy's rule) as the route's activity, keeping only the latest
    #: (``FakeServer.proxy_activity``); the hub folds that into last_activity at once, or with
    #: ``folds_at_once = False`` only at :meth:`fold_activity` (its ``last_activity_interval``).
    proxy_records_activity: bool = attrs.field(default=False, init=False)
    folds_at_once: bool = attrs.field(default=True, init=False)
    users: dict[str, FakeUser] = attrs.field(factory=dict, init=False)
    fault: Callable[[httpx.Request], Awaitable[httpx.Response | None]] | None = attrs.field(default=None, init=False)
    background_nursery: trio.Nursery | None = attrs.field(default=None, init=False)
    _next_id: int = attrs.field(default=1, init=False)
    _token: TokenScopes = attrs.field(factory=TokenScopes, init=False)
    _log: RequestLog = attrs.field(factory=RequestLog, init=False)
    _stops: Stops = attrs.field(default=attrs.Factory(lambda hub: Stops(hub._log), takes_self=True), init=False)
    _tokens: TokenRegistry = attrs.field(factory=TokenRegistry, init=False)

    # ------------------------------------------------------------------ state set-up

    def add_user(
        self,
        name: str,
        *,
        admin: bool = False,
        created: datetime | None = None,
        last_activity: datetime | None = None,
        servers: Mapping[str, FakeServer] | None = None,
        scopes: Iterable[str] | None = None,
    ) -> FakeUser:
        """Add a user. A server given with ``ready=False`` and no ``pending`` is a stopped one: kept in
        ``stopped_named`` if named, dropped if it is the default server. ``scopes``: what the user's roles grant
        (the limit of tokens minted for them); None: JupyterHub's default ``user`` role (and ``admin``)."""
        if name in self.users:
            raise ValueError(f"user {name!r} already exists")
        created = created if created is not None else self.clock()
        user = FakeUser(name, created, last_activity, admin, id=self._next_id)
        user.scopes = None if scopes is None else frozenset(scopes)
        self._next_id += 1
        for key, server in (servers or {}).items():
            if server.name != key:
                raise ValueError(f"server keyed {key!r} is named {server.name!r}")
            if server.ready or server.pending is not None:
                user.servers[key] = server
            elif key:
                user.stopped_named.add(key)
        self.users[name] = user
        return user

    #: ``hub.populate(n_users, idle_fraction=..., seed=..., now=...)``: many users at once (``_population``).
    populate = populate

    # ------------------------------------------------------------------ ways in

    def transport(self) -> httpx.AsyncBaseTransport:
        """An in-memory transport: ``httpx.AsyncClient(transport=hub.transport(), base_url=...)``."""
        return httpx.MockTransport(self.handle)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[FakeHub]:
        """Provide a background nursery for slow (202) stops; on exit wait for those still running."""
        async with open_helper_nursery() as nursery:
            with self._background(nursery):
                yield self

    async def serve(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve the API over HTTP/1.1 on a loopback address until cancelled.

        ``task_status.started(api_url)`` once listening, e.g. ``"http://127.0.0.1:PORT/hub/api"``.
        """
        async with open_helper_nursery() as nursery:
            with self._background(nursery):
                serving = partial(serve_loopback, self.handle, host=host, port=port, ssl_context=ssl_context)
                task_status.started(await nursery.start(serving))
                await trio.sleep_forever()  # keeps the background nursery installed

    @contextmanager
    def _background(self, nursery: trio.Nursery) -> Iterator[None]:
        if self.background_nursery is not None:
            yield  # an outer running()/serve() already provides one
            return
        self.background_nursery = nursery
        try:
            yield
        finally:
            self.background_nursery = None

    # ------------------------------------------------------------------ the API

    async def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request: record it, consult ``fault``, then act like JupyterHub (or the proxy in front of
        a single-user server)."""
        body = await request.aread()
        route = parse_route(request.url.raw_path)
        single_user = parse_single_user_route(request.url.raw_path)
        log = self._log
        connection = request.extensions.get(CONNECTION_ID)
        if connection is not None:
            log.connections.add(connection)
        kind = request_kind(request, route, body)
        if single_user is not None and single_user.endpoint in ("kernels", "terminals"):
            kind = single_user.endpoint
        elif single_user is not None and single_user.endpoint in ("notice", "keep"):
            kind = "notice"
            log.notice_requests[request.method] += 1
        log.requests_by_kind[kind] += 1
        if request.method == "DELETE" and route.endpoint in ("server", "user"):
            if route.endpoint == "server":
                log.stop_requests[route.user, route.server] += 1
            log.delete_requested()
        log.in_flight += 1
        log.max_in_flight = max(log.max_in_flight, log.in_flight)
        try:
            response = await self.fault(request) if self.fault is not None else None
            if response is None and single_user is not None:
                response = await self._single_user(request, single_user, body)
            elif response is None:
                response = await self._dispatch(request, route, body)
                response.headers["X-JupyterHub-Version"] = self.version
            log.status_codes[response.status_code] += 1
            return response
        finally:
            log.in_flight -= 1

    async def _dispatch(self, request: httpx.Request, route: Route, body: bytes) -> httpx.Response:
        if route.endpoint == "unknown":
            return error(404, "Not Found")
        if request.method not in _ALLOWED[route.endpoint]:
            return error(405, "Method Not Allowed")
        if route.endpoint == "version":
            return httpx.Response(200, json={"version": self.version})  # the one call without a token
        if route.endpoint == "self":
            return self._whoami(request)
        if not self._is_hub_token(presented_token(request)):
            return error(403, "Missing or invalid credentials.")
        refused = self._refused(request, route)
        if refused is not None:
            return refused
        if route.endpoint == "users":
            listing = Listing(self.paginate, self.default_page_size, self.max_page_size, self.list_latency)
            return await listing.answer(request, self.users, self._user_model, self._log)
        user = self.users.get(route.user)
        if user is None:
            return error(404, "Not Found")
        if route.endpoint == "user" and request.method == "GET":
            return httpx.Response(200, json=self._user_model(user))
        if route.endpoint == "user":
            response = await self._stops.delete_user(self.users, user, latency=self.delete_user_latency)
            if response.status_code == 204:
                self._tokens.forget_user(user.name)
            return response
        if route.endpoint == "tokens":
            now = self.clock()
            return self._tokens.mint(
                user, json_body(body), now=now, at=trio.current_time(), max_seconds=self.token_expires_in_max_seconds
            )
        if route.endpoint == "token":
            return self._tokens.revoke(user.name, route.server, at=trio.current_time())
        return await self._stops.stop_server(
            user,
            route,
            body,
            named_servers=self.named_servers,
            latency=self.stop_latency,
            slow_stop_timeout=self.slow_stop_timeout,
            background=self.background_nursery,
        )

    def _refused(self, request: httpx.Request, route: Route) -> httpx.Response | None:
        """403 when the culler's scopes do not cover the request, as JupyterHub answers it."""
        if route.endpoint in ("tokens", "token"):
            needed = "tokens"
            allowed = covers(self.scopes, f"tokens!user={route.user}")
        else:
            needed = {"users": "list:users", "server": "delete:servers"}.get(route.endpoint, "")
            if route.endpoint == "user":
                needed = "read:users:name" if request.method == "GET" else "delete:users"
            allowed = needed in self._token.update(self.scopes).granted
        if allowed:
            return None
        return error(403, f"Action is not authorized with current scopes; requires any of [{needed}]")

    def _whoami(self, request: httpx.Request) -> httpx.Response:
        """``GET /user``: the culler's service model, or a minted token's owner with that token's scopes."""
        secret = presented_token(request)
        if self._is_hub_token(secret):
            return httpx.Response(200, json=token_model(self.scopes, reports_scopes=self.reports_scopes))
        minted = self._minted(secret)
        if minted is None:
            return error(403, "Missing or invalid credentials.")
        return httpx.Response(200, json={"kind": "user", "name": minted.user, "scopes": sorted(minted.scopes)})

    async def _single_user(self, request: httpx.Request, route: SingleUserRoute, body: bytes) -> httpx.Response:
        """A single-user server behind the proxy: jupyter_server's kernels and terminals APIs and the notice API,
        to a credential whose scopes reach it."""
        await trio.sleep(self.server_latency)
        user = self.users.get(route.user)
        server = None if user is None else user.servers.get(route.server)
        secret = presented_token(request)
        is_hub = self._is_hub_token(secret)
        minted = None if is_hub else self._minted(secret)
        self._log.server_credentials["none" if secret is None else credential_kind(route, is_hub, minted)] += 1
        shown = self.scopes if is_hub else frozenset() if minted is None else minted.scopes
        allowed = reaches(route, shown) and self.server_access
        if route.endpoint in ("notice", "keep") and server is not None and server.ready and server.notices:
            response = notice_answer(server, route, request, body, self.clock()) if allowed else error(403, "Forbidden")
        else:
            response = answer(server, route, request.method, allowed)
        if self.proxy_records_activity and server is not None and (response.status_code < 300 or body):
            self._proxy_records(server)
        return response

    def _proxy_records(self, server: FakeServer) -> None:
        server.proxy_activity = self.clock()
        if self.folds_at_once:
            server.last_activity = server.proxy_activity

    def fold_activity(self) -> None:
        """The hub's ``last_activity_interval``: each route's latest request, as the proxy recorded it, becomes
        its server's last_activity when later."""
        for user in self.users.values():
            for server in user.servers.values():
                seen = server.proxy_activity
                if seen is not None and (server.last_activity is None or seen > server.last_activity):
                    server.last_activity = seen

    def use(self, user: str, server: str = "") -> None:
        """The user uses their server now, by the hub's clock: jupyter_server counts it as its own last activity,
        and the proxy (with ``proxy_records_activity``) records it as the route's latest request."""
        target = self.users[user].servers[server]
        target.own_activity = self.clock()
        if self.proxy_records_activity:
            self._proxy_records(target)

    def keep(self, user: str, server: str = "", *, notice_id: str | None = None) -> None:
        """The user clicks "Keep running" in a page of their server, now by the hub's clock (the notice API's
        ``POST keep``; the server must run the extension)."""
        target = self.users[user].servers[server]
        if not target.notices:
            raise ValueError(f"server {user}/{server} does not run the notice API")
        record_keep(target, notice_id, self.clock())

    def _user_model(self, user: FakeUser) -> Json:
        return self._token.update(self.scopes).visible(user_model(user, self.public_url))

    def _is_hub_token(self, secret: str | None) -> bool:
        return secret is not None and secrets.compare_digest(secret.encode(), self.token.encode())

    def _minted(self, secret: str | None) -> FakeToken | None:
        return None if secret is None else self._tokens.find(secret, at=trio.current_time())

    # ------------------------------------------------------------------ observation

    def live_tokens(self) -> tuple[FakeToken, ...]:
        """The tokens minted for users and neither revoked nor expired (call it within trio: expiry is by its
        clock)."""
        return self._tokens.live(at=trio.current_time())

    async def wait_stops_done(self) -> None:
        """Wait until no stop is in progress (e.g. after a 202, before inspecting ``users``)."""
        await self._stops.wait_done()

    def statistics(self) -> FakeHubStatistics:
        tokens = self._tokens
        return self._log.snapshot(tokens_minted=tokens.minted, tokens_revoked=tokens.revoked, tokens_live=len(tokens))
