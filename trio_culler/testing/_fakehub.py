"""FakeHub: the simulated JupyterHub itself, its request handler and its state changes.

The package docstring (``trio_culler.testing``) says how to use it; the pieces it stands on live beside it:
``_routes`` (which endpoint), ``_render`` (JupyterHub's JSON), ``_statistics`` (what it saw), ``_population``
(many users at once), ``_loopback`` and ``_h11_server`` (a real socket).
"""

from __future__ import annotations

import secrets
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial

import attrs
import httpx
import trio

from .._hub import PAGINATION_MEDIA_TYPE
from ._h11_server import RawRequest, RawResponse, serve_h11
from ._loopback import from_raw_request, open_loopback_listeners, to_raw_response
from ._model import FakeServer, FakeUser, is_ready
from ._nursery import open_helper_nursery
from ._population import Population, populate
from ._render import Json, error, user_model
from ._routes import INVALID_JSON, Route, json_body, parse_route, request_kind
from ._singleuser import SingleUserRoute, kernel_model, parse_single_user_route, terminal_model
from ._statistics import FakeHubStatistics, PageRequest, RequestLog
from ._token import FULL_SCOPES, TokenScopes, token_model

__all__ = ["FakeHub"]


def _utc_now() -> datetime:
    return datetime.now(UTC)


@attrs.define
class _Stop:
    done: trio.Event = attrs.Factory(trio.Event)
    remove: bool = False  # a later DELETE with {"remove": true} can still ask for removal


class FakeHub:
    """A simulated JupyterHub; see the module docstring for how to reach it."""

    def __init__(
        self,
        *,
        version: str = "5.2.1",
        token: str = "fake-hub-token",
        paginate: bool = True,
        default_page_size: int = 50,
        max_page_size: int = 200,
        stop_latency: float = 0.0,
        delete_user_latency: float = 0.0,
        list_latency: float = 0.0,
        slow_stop_timeout: float = 10.0,
        named_servers: bool = True,
        clock: Callable[[], datetime] = _utc_now,
        server_latency: float = 0.0,
        public_url: str | None = None,
        scopes: Iterable[str] = FULL_SCOPES,
        reports_scopes: bool = True,
    ) -> None:
        self.version = version
        self.token = token
        #: The token's scopes (unfiltered ones only): the hub hides user-model keys and refuses requests
        #: accordingly. Settable while serving: a test can fix the culler's role between two passes.
        self.scopes = frozenset(scopes)
        #: Whether ``GET /user`` lists them; False is a hub before 2.0, which cannot say.
        self.reports_scopes = reports_scopes
        self._token = TokenScopes()
        self.paginate = paginate  # False: a JupyterHub < 2.0, which ignores offset/limit
        self.default_page_size = default_page_size
        self.max_page_size = max_page_size
        self.stop_latency = stop_latency
        self.delete_user_latency = delete_user_latency
        self.list_latency = list_latency
        self.slow_stop_timeout = slow_stop_timeout
        self.named_servers = named_servers
        #: Seconds a single-user server takes to answer api/kernels or api/terminals.
        self.server_latency = server_latency
        #: False: single-user servers answer 403, as to a token without access:servers.
        self.server_access = True
        #: The hub's public_url: when set, server models carry ``full_url`` (else ``null``, as JupyterHub does).
        self.public_url = public_url
        self.clock = clock  # the hub's "now", for timestamps it makes itself (user creation)
        self.users: dict[str, FakeUser] = {}
        self.fault: Callable[[httpx.Request], Awaitable[httpx.Response | None]] | None = None
        self.background_nursery: trio.Nursery | None = None
        self._next_id = 1
        self._stops: dict[tuple[str, str], _Stop] = {}
        self._log = RequestLog()

    # ------------------------------------------------------------------ state set-up

    def add_user(
        self,
        name: str,
        *,
        admin: bool = False,
        created: datetime | None = None,
        last_activity: datetime | None = None,
        servers: Mapping[str, FakeServer] | None = None,
    ) -> FakeUser:
        """Add a user. A server given with ``ready=False`` and no ``pending`` is a stopped one:
        kept in ``stopped_named`` if named, dropped if it is the default server."""
        if name in self.users:
            raise ValueError(f"user {name!r} already exists")
        user = FakeUser(name, created if created is not None else self.clock(), last_activity, admin, id=self._next_id)
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

    def populate(
        self,
        n_users: int,
        *,
        idle_fraction: float,
        seed: int,
        now: datetime,
        idle_for: timedelta = timedelta(hours=2),
        active_for: timedelta = timedelta(minutes=1),
        named_fraction: float = 0.0,
        admin_fraction: float = 0.0,
        name_prefix: str = "user",
    ) -> Population:
        """Add ``n_users`` users with a ready default server each, deterministically from ``seed``.

        ``round(named_fraction * n_users)`` of them also get a ready server named ``"named"``;
        ``round(idle_fraction * servers)`` of all the servers are idle (last activity between
        ``idle_for`` and ``2 * idle_for`` before ``now``), the others active (within ``active_for``).
        A culler whose timeout lies in ``(active_for, idle_for]`` must stop exactly ``idle``.
        """
        return populate(
            self,
            n_users,
            idle_fraction=idle_fraction,
            seed=seed,
            now=now,
            idle_for=idle_for,
            active_for=active_for,
            named_fraction=named_fraction,
            admin_fraction=admin_fraction,
            name_prefix=name_prefix,
        )

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
        loopback = await open_loopback_listeners(host, port, ssl_context)
        async with trio.open_nursery() as nursery:
            with self._background(nursery):
                await nursery.start(serve_h11, partial(self._handle_raw, loopback.scheme), loopback.listeners)
                task_status.started(loopback.api_url)
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

    async def _handle_raw(self, scheme: str, raw: RawRequest) -> RawResponse:
        # The loopback server's entry point: translate to httpx, so both paths share handle().
        self._log.connections.add(raw.connection_id)
        return await to_raw_response(await self.handle(from_raw_request(scheme, raw)))

    # ------------------------------------------------------------------ the API

    async def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request: record it, consult ``fault``, then act like JupyterHub."""
        body = await request.aread()
        route = parse_route(request.url.raw_path)
        single_user = parse_single_user_route(request.url.raw_path)
        log = self._log
        kind = request_kind(request, route, body)
        if single_user is not None and single_user.endpoint in ("kernels", "terminals"):
            kind = single_user.endpoint
        log.by_kind[kind] += 1
        if request.method == "DELETE":
            if route.endpoint == "server":
                log.stop_requests[route.user, route.server] += 1
            log.delete_requested()
        log.in_flight += 1
        log.max_in_flight = max(log.max_in_flight, log.in_flight)
        try:
            response = await self.fault(request) if self.fault is not None else None
            if response is None and single_user is not None:
                response = await self._single_user(request, single_user)
            elif response is None:
                response = await self._dispatch(request, route, body)
                response.headers["X-JupyterHub-Version"] = self.version
            log.status_codes[response.status_code] += 1
            return response
        finally:
            log.in_flight -= 1

    async def _dispatch(self, request: httpx.Request, route: Route, body: bytes) -> httpx.Response:
        allowed = {
            "version": {"GET"},
            "self": {"GET"},
            "users": {"GET"},
            "user": {"GET", "DELETE"},
            "server": {"DELETE"},
        }
        if route.endpoint == "unknown":
            return error(404, "Not Found")
        if request.method not in allowed[route.endpoint]:
            return error(405, "Method Not Allowed")
        if route.endpoint == "version":
            return httpx.Response(200, json={"version": self.version})  # the one call without a token
        if not self._authorized(request):
            return error(403, "Missing or invalid credentials.")
        if route.endpoint == "self":
            return httpx.Response(200, json=token_model(self.scopes, reports_scopes=self.reports_scopes))
        needed = {"users": "list:users", "server": "delete:servers"}.get(route.endpoint)
        if route.endpoint == "user":
            needed = "read:users:name" if request.method == "GET" else "delete:users"
        if needed is not None and needed not in self._token.update(self.scopes).granted:
            return error(403, f"Action is not authorized with current scopes; requires any of [{needed}]")
        if route.endpoint == "users":
            return await self._list_users(request)
        user = self.users.get(route.user)
        if user is None:
            return error(404, "Not Found")
        if route.endpoint == "user" and request.method == "GET":
            return httpx.Response(200, json=self._user_model(user))
        if route.endpoint == "user":
            return await self._delete_user(user)
        return await self._stop_server(user, route, body)

    async def _single_user(self, request: httpx.Request, route: SingleUserRoute) -> httpx.Response:
        """A single-user server behind the proxy: jupyter_server's kernels and terminals APIs."""
        await trio.sleep(self.server_latency)
        user = self.users.get(route.user)
        server = None if user is None else user.servers.get(route.server)
        if server is None or not server.ready:
            # The proxy has no route for it: the hub's "not running" page.
            return error(404, "Not Found")
        if server.kernels is None or route.endpoint == "unknown":
            return error(404, "Not Found")
        if request.method != "GET":
            return error(405, "Method Not Allowed")
        if not self._authorized(request) or not self.server_access:
            return error(403, "Forbidden")
        if route.endpoint == "kernels":
            return httpx.Response(200, json=[kernel_model(kernel) for kernel in server.kernels])
        if route.endpoint == "terminals":
            return httpx.Response(200, json=[terminal_model(terminal) for terminal in server.terminals])
        return httpx.Response(200, json={"started": None, "last_activity": None, "kernels": len(server.kernels)})

    def _user_model(self, user: FakeUser) -> Json:
        return self._token.update(self.scopes).visible(user_model(user, self.public_url))

    def _authorized(self, request: httpx.Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() in ("token", "bearer") and secrets.compare_digest(
            token.strip().encode(), self.token.encode()
        )

    async def _list_users(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        state = params.get("state") or None
        if state not in (None, "active", "ready", "inactive"):
            return error(400, f"Unrecognized state filter: {state!r}")
        accepts = {s.strip().lower() for s in request.headers.get("accept", "").split(",")}
        paginated = PAGINATION_MEDIA_TYPE in accepts
        now = trio.current_time()
        if not self.paginate:
            self._log.list_requested(PageRequest(0, None, state, paginated, now))
            await trio.sleep(self.list_latency)
            users = [u for u in self._filtered(state) if state != "ready" or is_ready(u)]
            return httpx.Response(200, json=[self._user_model(u) for u in users])
        # Without the header the real hub defaults to the *max* limit, and truncates silently.
        default_limit = self.default_page_size if paginated else self.max_page_size
        try:
            offset = abs(int(params.get("offset", 0)))
            limit = min(max(abs(int(params.get("limit", default_limit))), 1), self.max_page_size)
        except ValueError:
            return error(400, "Invalid argument type, offset and limit must be integers")
        self._log.list_requested(PageRequest(offset, limit, state, paginated, now))
        await trio.sleep(self.list_latency)
        # Computed after the latency: a slow listing reflects the hub's state when it answers.
        matching = self._filtered(state)
        page = matching[offset : offset + limit]
        if state == "ready":
            # As in JupyterHub: page over *active* users, then drop the ones not ready.
            page = [u for u in page if is_ready(u)]
        items = [self._user_model(u) for u in page]
        if not paginated:
            return httpx.Response(200, json=items)
        next_offset = offset + limit
        next_page = None
        if next_offset < len(matching):
            url = request.url.copy_merge_params({"offset": next_offset, "limit": limit})
            next_page = {"offset": next_offset, "limit": limit, "url": str(url)}
        pagination = {"offset": offset, "limit": limit, "total": len(matching), "next": next_page}
        return httpx.Response(200, json={"items": items, "_pagination": pagination})

    def _filtered(self, state: str | None) -> list[FakeUser]:
        users = sorted(self.users.values(), key=lambda u: u.id)
        if state in ("active", "ready"):
            return [u for u in users if u.servers]
        if state == "inactive":
            return [u for u in users if not u.servers]
        return users

    async def _stop_server(self, user: FakeUser, route: Route, body: bytes) -> httpx.Response:
        options = json_body(body)
        if options is INVALID_JSON or (options is not None and not isinstance(options, dict)):
            return error(400, "Invalid JSON in body of request")
        remove = bool(options.get("remove", False)) if isinstance(options, dict) else False
        name = route.server
        if name:
            if not self.named_servers:
                return error(400, "Named servers are not enabled.")
            if name not in user.servers and name not in user.stopped_named:
                return error(404, f"{user.name} has no server named '{name}'")
        elif remove:
            return error(400, "Cannot delete the default server")
        server = user.servers.get(name)
        if server is None:  # exists, not running: nothing to stop
            if remove:
                user.stopped_named.discard(name)
            return httpx.Response(204)
        key = (user.name, name)
        if server.pending == "stop":
            # JupyterHub answers 202 again, and honours a late request to remove.
            stop = self._stops.get(key)
            if stop is not None and remove:
                stop.remove = True
            return httpx.Response(202)
        server.pending, server.ready = "stop", False
        stop = self._stops[key] = _Stop(remove=remove)
        latency = server.stop_latency if server.stop_latency is not None else self.stop_latency
        if self.background_nursery is None:
            await self._run_stop(user, server, stop, latency)
            return httpx.Response(202 if latency > self.slow_stop_timeout else 204)
        self.background_nursery.start_soon(self._run_stop, user, server, stop, latency)
        with trio.move_on_after(self.slow_stop_timeout):
            await stop.done.wait()
            return httpx.Response(204)
        return httpx.Response(202)  # still stopping; the background task finishes it

    async def _run_stop(self, user: FakeUser, server: FakeServer, stop: _Stop, latency: float) -> None:
        try:
            await trio.sleep(latency)
        finally:
            # Also on cancellation: a stop once begun is not undone (see the module docstring).
            key = (user.name, server.name)
            self._stops.pop(key, None)
            if user.servers.get(server.name) is server:
                del user.servers[server.name]
                server.pending, server.ready = None, False
                if server.name and not stop.remove:
                    user.stopped_named.add(server.name)
            self._log.stops_completed.append(key)
            stop.done.set()

    async def _delete_user(self, user: FakeUser) -> httpx.Response:
        # Stricter than JupyterHub on purpose: see the module docstring.
        if any(s.pending == "stop" for s in user.servers.values()):
            return error(400, f"{user.name}'s server is in the process of stopping, please wait.")
        if user.servers:
            return error(400, f"{user.name} has active servers")
        await trio.sleep(self.delete_user_latency)
        if self.users.get(user.name) is not user or user.servers:
            return error(400, f"{user.name} changed while being deleted")
        del self.users[user.name]
        self._log.users_deleted.append(user.name)
        return httpx.Response(204)

    # ------------------------------------------------------------------ observation

    async def wait_stops_done(self) -> None:
        """Wait until no stop is in progress (e.g. after a 202, before inspecting ``users``)."""
        while self._stops:
            await next(iter(self._stops.values())).done.wait()

    def statistics(self) -> FakeHubStatistics:
        return self._log.snapshot()
