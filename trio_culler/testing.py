"""FakeHub: an in-memory JupyterHub REST API for tests, demos and fault injection.

FakeHub models the parts of JupyterHub's API that a culler uses (version probe, paged user
listing with ``state`` filters, stopping and removing servers, deleting users) closely enough
that the hub's awkward behaviours are reproduced: live offsets that shift when a stop completes,
``state=ready`` filtered *after* slicing, plain lists silently truncated without the pagination
header, 202 for slow stops, JSON error bodies, single percent-decoding of path segments.

Two ways in, sharing one request handler (:meth:`FakeHub.handle`)::

    hub = FakeHub()
    hub.add_user("alice", servers={"": FakeServer("", started=t0, last_activity=t0)})

    # 1. in memory (works with trio's autojump_clock)
    async with hub.running(), httpx.AsyncClient(transport=hub.transport(),
                                                base_url="http://hub.test/hub/api") as client:
        ...

    # 2. real HTTP/1.1 on a loopback address (optionally TLS)
    async with open_fake_hub(hub) as api_url:   # "http://127.0.0.1:PORT/hub/api"
        ...

Background stops. A stop slower than ``slow_stop_timeout`` answers 202 and finishes later, so it
needs a task that outlives the request: it runs in ``hub.background_nursery``. ``serve()`` (and so
``open_fake_hub``) provides one for as long as it runs; for the MockTransport path use
``async with hub.running():`` (or assign any nursery to ``hub.background_nursery`` yourself).
Leaving ``running()`` waits for stops still in progress. Without a background nursery a stop runs
inline: the request waits the whole latency and then answers 202 if that exceeded
``slow_stop_timeout``. A stop is never undone: if its task is cancelled (client timeout on the
inline path, hub shut down) the server is marked stopped at once.

Fault injection: ``hub.fault`` is awaited first for every request. It may sleep, return a
response (used as is), return None (normal handling), or raise. On the MockTransport path the
exception reaches the client unchanged (raise e.g. ``httpx.ReadError`` to simulate a dropped
connection); on the HTTP path any exception closes the connection without an answer.

One deliberate difference: ``DELETE /users/{name}`` answers 400 while the user has any active
server, where JupyterHub would first stop a running default server itself; a culler must stop
every server before deleting a user, and this catches one that does not.
"""

from __future__ import annotations

import collections
import ipaddress
import json
import random
import secrets
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Literal
from urllib.parse import quote, unquote

import attrs
import httpx
import trio

from ._fakehub_http import RawRequest, RawResponse, serve_h11

__all__ = [
    "FakeHub",
    "FakeHubStatistics",
    "FakeServer",
    "FakeUser",
    "PageRequest",
    "Population",
    "open_fake_hub",
]

PAGINATION_MEDIA_TYPE = "application/jupyterhub-pagination+json"
RequestKind = Literal["version", "list", "stop", "remove", "delete_user", "other"]
_KINDS: tuple[RequestKind, ...] = ("version", "list", "stop", "remove", "delete_user", "other")
_Json = dict[str, Any]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _isoformat(dt: datetime | None) -> str | None:
    """JupyterHub's rendering: UTC, ``Z`` suffix, no fraction when it is zero; naive means UTC."""
    if dt is None:
        return None
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt.isoformat() + "Z"


def _escape(name: str) -> str:
    return quote(name, safe="@~")  # JupyterHub's url_escape_path


@attrs.define
class FakeServer:
    name: str  # "" is the default server
    started: datetime | None
    last_activity: datetime | None
    pending: str | None = None  # None | "spawn" | "stop"
    ready: bool = True
    stop_latency: float | None = None  # overrides FakeHub.stop_latency for this server


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


@attrs.frozen
class Population:
    """What :meth:`FakeHub.populate` created; pairs are ``(user name, server name)``."""

    users: tuple[str, ...]
    idle: frozenset[tuple[str, str]]  # inactive for at least ``idle_for``
    active: frozenset[tuple[str, str]]  # active within ``active_for``
    idle_users: frozenset[str]  # users all of whose servers are idle
    admins: frozenset[str]


@attrs.frozen
class PageRequest:
    """One ``GET /users`` as the hub interpreted it (after defaults and clamping)."""

    offset: int
    limit: int | None  # None: an old hub (paginate=False) returned everything
    state: str | None
    paginated: bool  # the client sent the pagination Accept header
    at: float  # trio.current_time() on arrival


@attrs.frozen
class FakeHubStatistics:
    requests_by_kind: Mapping[RequestKind, int]
    in_flight: int
    max_in_flight: int
    stop_requests: Mapping[tuple[str, str], int]  # DELETEs per (user, server), stop or remove
    stops_completed: tuple[tuple[str, str], ...]  # in completion order
    users_deleted: tuple[str, ...]
    first_delete_at: float | None  # trio.current_time() of the first DELETE of any kind
    last_list_at: float | None  # trio.current_time() of the last GET /users
    page_requests: tuple[PageRequest, ...]
    status_codes: Mapping[int, int]  # status -> count, fault responses included
    connections: int  # distinct loopback connections that carried a request


@attrs.define
class _Stop:
    done: trio.Event = attrs.Factory(trio.Event)
    remove: bool = False  # a later DELETE with {"remove": true} can still ask for removal


@attrs.frozen
class _Route:
    endpoint: Literal["version", "users", "user", "server", "unknown"]
    user: str = ""
    server: str = ""
    named: bool = False  # reached through /servers/{name}, not /server


def _error(status: int, message: str) -> httpx.Response:
    return httpx.Response(status, json={"status": status, "message": message})


def _parse_route(raw_path: bytes) -> _Route:
    # Split the *encoded* path and decode each segment once, as tornado's routing does, so
    # "%2F" stays inside a name and "%2525" names a user called "%25".
    segments = raw_path.split(b"?", 1)[0].decode("ascii", "replace").split("/")
    for i in range(len(segments) - 1):
        if segments[i] == "hub" and segments[i + 1] == "api":
            rest = [unquote(s) for s in segments[i + 2 :]]
            break
    else:
        return _Route("unknown")
    if rest in ([], [""]):
        return _Route("version")
    if rest[0] != "users":
        return _Route("unknown")
    if rest[1:] in ([], [""]):
        return _Route("users")
    user = rest[1]
    if not user:
        return _Route("unknown")
    if len(rest) == 2:
        return _Route("user", user)
    if len(rest) == 3 and rest[2] == "server":
        return _Route("server", user)
    if len(rest) == 4 and rest[2] == "servers":
        # "/servers/" with an empty name is the default server, as in JupyterHub's route
        return _Route("server", user, rest[3], named=True)
    return _Route("unknown")


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
    ) -> None:
        self.version = version
        self.token = token
        self.paginate = paginate  # False: a JupyterHub < 2.0, which ignores offset/limit
        self.default_page_size = default_page_size
        self.max_page_size = max_page_size
        self.stop_latency = stop_latency
        self.delete_user_latency = delete_user_latency
        self.list_latency = list_latency
        self.slow_stop_timeout = slow_stop_timeout
        self.named_servers = named_servers
        self.clock = clock  # the hub's "now", for timestamps it makes itself (user creation)
        self.users: dict[str, FakeUser] = {}
        self.fault: Callable[[httpx.Request], Awaitable[httpx.Response | None]] | None = None
        self.background_nursery: trio.Nursery | None = None
        self._next_id = 1
        self._stops: dict[tuple[str, str], _Stop] = {}
        # statistics
        self._by_kind: collections.Counter[RequestKind] = collections.Counter()
        self._in_flight = 0
        self._max_in_flight = 0
        self._stop_requests: collections.Counter[tuple[str, str]] = collections.Counter()
        self._stops_completed: list[tuple[str, str]] = []
        self._users_deleted: list[str] = []
        self._first_delete_at: float | None = None
        self._last_list_at: float | None = None
        self._pages: list[PageRequest] = []
        self._status_codes: collections.Counter[int] = collections.Counter()
        self._connections: set[int] = set()

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
        for fraction in (idle_fraction, named_fraction, admin_fraction):
            if not 0.0 <= fraction <= 1.0:
                raise ValueError(f"fractions must be within [0, 1], got {fraction}")
        rng = random.Random(seed)
        width = len(str(max(n_users - 1, 0)))
        names = [f"{name_prefix}-{i:0{width}d}" for i in range(n_users)]  # name order == id order
        with_named = set(rng.sample(names, round(named_fraction * n_users)))
        admins = frozenset(rng.sample(names, round(admin_fraction * n_users)))
        slots = [(n, s) for n in names for s in ("", "named") if s == "" or n in with_named]
        idle = frozenset(rng.sample(slots, round(idle_fraction * len(slots))))
        idle_users = set()
        for name in names:
            servers: dict[str, FakeServer] = {}
            starts, lasts = [], []
            server_names = ("", "named") if name in with_named else ("",)
            for server_name in server_names:
                is_idle = (name, server_name) in idle
                quiet = idle_for * (1 + rng.random()) if is_idle else active_for * rng.random()
                lasts.append(now - quiet)
                starts.append(lasts[-1] - timedelta(seconds=rng.uniform(0, 3600)))
                servers[server_name] = FakeServer(server_name, started=starts[-1], last_activity=lasts[-1])
            if all((name, server_name) in idle for server_name in server_names):
                idle_users.add(name)
            self.add_user(
                name,
                admin=name in admins,
                created=min(starts) - timedelta(days=1),
                last_activity=max(lasts),
                servers=servers,
            )
        return Population(
            users=tuple(names),
            idle=idle,
            active=frozenset(slots) - idle,
            idle_users=frozenset(idle_users),
            admins=admins,
        )

    # ------------------------------------------------------------------ ways in

    def transport(self) -> httpx.AsyncBaseTransport:
        """An in-memory transport: ``httpx.AsyncClient(transport=hub.transport(), base_url=...)``."""
        return httpx.MockTransport(self.handle)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[FakeHub]:
        """Provide a background nursery for slow (202) stops; on exit wait for those still running."""
        async with _open_helper_nursery() as nursery:
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
        if host == "localhost":
            host = "127.0.0.1"
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(f"FakeHub only listens on a loopback address, not {host!r}")
        sockets = await trio.open_tcp_listeners(port, host=host)
        bound_port = sockets[0].socket.getsockname()[1]
        listeners: list[trio.abc.Listener[trio.abc.Stream]] = list(sockets)
        scheme = "http"
        if ssl_context is not None:
            scheme = "https"
            listeners = [trio.SSLListener(s, ssl_context, https_compatible=True) for s in sockets]
        url_host = f"[{host}]" if ":" in host else host
        async with trio.open_nursery() as nursery:
            with self._background(nursery):
                await nursery.start(serve_h11, partial(self._handle_raw, scheme), listeners)
                task_status.started(f"{scheme}://{url_host}:{bound_port}/hub/api")
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
        self._connections.add(raw.connection_id)
        host = next((v for k, v in raw.headers if k.lower() == b"host"), b"localhost")
        url = httpx.URL(f"{scheme}://{host.decode('ascii')}").copy_with(raw_path=raw.target)
        request = httpx.Request(raw.method, url, headers=raw.headers, content=raw.body)
        response = await self.handle(request)
        return RawResponse(response.status_code, list(response.headers.raw), await response.aread())

    # ------------------------------------------------------------------ the API

    async def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request: record it, consult ``fault``, then act like JupyterHub."""
        body = await request.aread()
        route = _parse_route(request.url.raw_path)
        kind = self._kind(request, route, body)
        self._by_kind[kind] += 1
        if request.method == "DELETE":
            if route.endpoint == "server":
                self._stop_requests[route.user, route.server] += 1
            if self._first_delete_at is None:
                self._first_delete_at = trio.current_time()
        self._in_flight += 1
        self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            response = await self.fault(request) if self.fault is not None else None
            if response is None:
                response = await self._dispatch(request, route, body)
                response.headers["X-JupyterHub-Version"] = self.version
            self._status_codes[response.status_code] += 1
            return response
        finally:
            self._in_flight -= 1

    @staticmethod
    def _kind(request: httpx.Request, route: _Route, body: bytes) -> RequestKind:
        method = request.method
        if route.endpoint == "version" and method == "GET":
            return "version"
        if route.endpoint == "users" and method == "GET":
            return "list"
        if route.endpoint == "user" and method == "DELETE":
            return "delete_user"
        if route.endpoint == "server" and method == "DELETE":
            options = _json_body(body)
            return "remove" if isinstance(options, dict) and options.get("remove") else "stop"
        return "other"

    async def _dispatch(self, request: httpx.Request, route: _Route, body: bytes) -> httpx.Response:
        allowed = {"version": {"GET"}, "users": {"GET"}, "user": {"GET", "DELETE"}, "server": {"DELETE"}}
        if route.endpoint == "unknown":
            return _error(404, "Not Found")
        if request.method not in allowed[route.endpoint]:
            return _error(405, "Method Not Allowed")
        if route.endpoint == "version":
            return httpx.Response(200, json={"version": self.version})  # the one call without a token
        if not self._authorized(request):
            return _error(403, "Missing or invalid credentials.")
        if route.endpoint == "users":
            return await self._list_users(request)
        user = self.users.get(route.user)
        if user is None:
            return _error(404, "Not Found")
        if route.endpoint == "user" and request.method == "GET":
            return httpx.Response(200, json=self._user_model(user))
        if route.endpoint == "user":
            return await self._delete_user(user)
        return await self._stop_server(user, route, body)

    def _authorized(self, request: httpx.Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() in ("token", "bearer") and secrets.compare_digest(
            token.strip().encode(), self.token.encode()
        )

    async def _list_users(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        state = params.get("state") or None
        if state not in (None, "active", "ready", "inactive"):
            return _error(400, f"Unrecognized state filter: {state!r}")
        accepts = {s.strip().lower() for s in request.headers.get("accept", "").split(",")}
        paginated = PAGINATION_MEDIA_TYPE in accepts
        now = trio.current_time()
        self._last_list_at = now
        if not self.paginate:
            self._pages.append(PageRequest(0, None, state, paginated, now))
            await trio.sleep(self.list_latency)
            users = [u for u in self._filtered(state) if state != "ready" or _is_ready(u)]
            return httpx.Response(200, json=[self._user_model(u) for u in users])
        # Without the header the real hub defaults to the *max* limit, and truncates silently.
        default_limit = self.default_page_size if paginated else self.max_page_size
        try:
            offset = abs(int(params.get("offset", 0)))
            limit = min(max(abs(int(params.get("limit", default_limit))), 1), self.max_page_size)
        except ValueError:
            return _error(400, "Invalid argument type, offset and limit must be integers")
        self._pages.append(PageRequest(offset, limit, state, paginated, now))
        await trio.sleep(self.list_latency)
        # Computed after the latency: a slow listing reflects the hub's state when it answers.
        matching = self._filtered(state)
        page = matching[offset : offset + limit]
        if state == "ready":
            # As in JupyterHub: page over *active* users, then drop the ones not ready.
            page = [u for u in page if _is_ready(u)]
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

    def _user_model(self, user: FakeUser) -> _Json:
        default = user.servers.get("")
        return {
            "kind": "user",
            "name": user.name,
            "admin": user.admin,
            "roles": ["admin", "user"] if user.admin else ["user"],
            "groups": [],
            "server": f"/user/{_escape(user.name)}/" if default is not None and default.ready else None,
            "pending": default.pending if default is not None else None,
            "created": _isoformat(user.created),
            "last_activity": _isoformat(user.last_activity),
            "auth_state": None,
            "servers": {name: self._server_model(user, s) for name, s in user.servers.items()},
        }

    @staticmethod
    def _server_model(user: FakeUser, server: FakeServer) -> _Json:
        base = f"/user/{_escape(user.name)}/"
        api = f"/hub/api/users/{_escape(user.name)}"
        return {
            "name": server.name,
            "full_name": f"{user.name}/{server.name}",
            "last_activity": _isoformat(server.last_activity),
            "started": _isoformat(server.started),
            "pending": server.pending,
            "ready": server.ready,
            "stopped": False,  # only active servers are listed
            "url": f"{base}{_escape(server.name)}/" if server.name else base,
            "user_options": {},
            "progress_url": (
                f"{api}/servers/{_escape(server.name)}/progress" if server.name else f"{api}/server/progress"
            ),
            "full_url": None,
            "full_progress_url": None,
        }

    async def _stop_server(self, user: FakeUser, route: _Route, body: bytes) -> httpx.Response:
        options = _json_body(body)
        if options is _INVALID or (options is not None and not isinstance(options, dict)):
            return _error(400, "Invalid JSON in body of request")
        remove = bool(options.get("remove", False)) if isinstance(options, dict) else False
        name = route.server
        if name:
            if not self.named_servers:
                return _error(400, "Named servers are not enabled.")
            if name not in user.servers and name not in user.stopped_named:
                return _error(404, f"{user.name} has no server named '{name}'")
        elif remove:
            return _error(400, "Cannot delete the default server")
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
            self._stops_completed.append(key)
            stop.done.set()

    async def _delete_user(self, user: FakeUser) -> httpx.Response:
        # Stricter than JupyterHub on purpose: see the module docstring.
        if any(s.pending == "stop" for s in user.servers.values()):
            return _error(400, f"{user.name}'s server is in the process of stopping, please wait.")
        if user.servers:
            return _error(400, f"{user.name} has active servers")
        await trio.sleep(self.delete_user_latency)
        if self.users.get(user.name) is not user or user.servers:
            return _error(400, f"{user.name} changed while being deleted")
        del self.users[user.name]
        self._users_deleted.append(user.name)
        return httpx.Response(204)

    # ------------------------------------------------------------------ observation

    async def wait_stops_done(self) -> None:
        """Wait until no stop is in progress (e.g. after a 202, before inspecting ``users``)."""
        while self._stops:
            await next(iter(self._stops.values())).done.wait()

    def statistics(self) -> FakeHubStatistics:
        return FakeHubStatistics(
            requests_by_kind={kind: self._by_kind[kind] for kind in _KINDS},
            in_flight=self._in_flight,
            max_in_flight=self._max_in_flight,
            stop_requests=dict(self._stop_requests),
            stops_completed=tuple(self._stops_completed),
            users_deleted=tuple(self._users_deleted),
            first_delete_at=self._first_delete_at,
            last_list_at=self._last_list_at,
            page_requests=tuple(self._pages),
            status_codes=dict(self._status_codes),
            connections=len(self._connections),
        )


_INVALID = object()


def _json_body(body: bytes) -> object:
    """The parsed JSON body, None when empty, ``_INVALID`` when it is not JSON."""
    if not body.strip():
        return None
    try:
        return json.loads(body.decode("utf-8", "replace"))
    except ValueError:
        return _INVALID


@asynccontextmanager
async def _open_helper_nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery for a context manager's helper tasks, which do not fail: an exception from the
    ``async with`` body then comes out as itself, not wrapped in a one-member ExceptionGroup."""
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


def _is_ready(user: FakeUser) -> bool:
    return any(s.ready for s in user.servers.values())


@asynccontextmanager
async def open_fake_hub(
    hub: FakeHub, *, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    """Serve ``hub`` on a loopback address for the duration of the block; yields its API URL."""
    async with _open_helper_nursery() as nursery:
        api_url: str = await nursery.start(partial(hub.serve, host=host, ssl_context=ssl_context))
        try:
            yield api_url
        finally:
            nursery.cancel_scope.cancel()
