#!/usr/bin/env python3
"""A fake JupyterHub REST API, in its own process, for benchmarking idle cullers.

Written independently of ``trio_culler`` (it imports nothing from it), so that it is a fair yardstick for
both cullers and cross-checks the semantics the culler relies on:

- ``GET /hub/api/`` -> ``{"version": "5.2.1"}`` (no token needed).
- ``GET /hub/api/users?state=&offset=&limit=`` ordered by user id. With the header
  ``Accept: application/jupyterhub-pagination+json`` the reply is ``{"items", "_pagination"}``;
  without it a plain list truncated to ``--page-max``. ``state=ready`` pages over *active* users and
  filters ready ones after slicing; ``state=active`` / ``state=inactive`` as the hub. Offsets are not a
  snapshot: when a stop completes the user leaves the active set and every later offset shifts by one.
- ``DELETE /hub/api/users/{name}/server`` and ``/servers/{name}`` (JSON body ``{"remove": true}``):
  the server is pending ``stop`` for ``--stop-latency`` seconds; if that outlasts
  ``--slow-stop-timeout`` the hub answers 202 and the stop finishes in the background, else 204.
  204 for a server that is not running, 202 for one already stopping, 404 for an unknown user or
  named server, 400 for named servers when they are disabled or ``remove`` on the default server.
- ``DELETE /hub/api/users/{name}``: 400 while the default server is stopping; otherwise stops it
  (as the hub does), then deletes the user.
- ``POST /hub/api/users/{name}/tokens`` (body ``{"scopes": ["access:servers!server={name}/{server}"], ...}``):
  201 with a token for that server alone (400 for any other scope); ``DELETE .../tokens/{id}``: 204, or 404.
- ``GET /user/{name}/[{server}/]api/kernels``, ``.../api/status`` and ``.../api/terminals``: the single-user
  servers behind the proxy, as jupyter_server answers ``--inspect-kernels`` (only to a token minted for that
  server: the hub's own token is refused, and counted in the stats as ``hub_token_at_servers``), kernels and
  status after ``--kernel-latency`` seconds (status: the server's own ``last_activity``, its hub one). Every
  running server has one kernel, ``busy`` for ``--busy-fraction`` of the idle servers (busy since its last
  activity: a long silent cell), else ``idle``; no terminals. A busy idle server is not counted as idle in the
  correctness ledger: a culler that reads its kernel spares it.
- ``GET /_bench/stats[?detail=1]`` (no auth): request counts by kind, most requests in flight (from
  request parsed to response written), first request / first DELETE / last response times
  (``time.monotonic()``, CLOCK_MONOTONIC, comparable across processes on Linux, plus wall clock),
  and the correctness ledger: idle servers still running, active servers stopped, servers asked to
  stop more than once. ``GET /_bench/reset`` zeroes the request counters (not the population).

The HTTP/1.1 server is a lean ``asyncio.Protocol`` with keep-alive; user models are serialised once
and cached until the user changes, so that the hub is not the bottleneck (``run.py`` measures its
capacity). Only 127.0.0.1 is ever bound. The process exits by itself after ``--max-lifetime`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import signal
import sys
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode

API_PREFIX = "/hub/api"
PAGINATION_MEDIA = "application/jupyterhub-pagination+json"
RUNNING, STOPPING, STOPPED = 0, 1, 2
ODD_CHARS = ["@", "+", ".", "#", "?", ";", "%", " ", "ü", "é", "&", "="]

TASKS: set[asyncio.Future[None]] = set()  # strong references to in-progress responses
REASONS = {
    200: b"OK",
    202: b"Accepted",
    204: b"No Content",
    400: b"Bad Request",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    411: b"Length Required",
    500: b"Internal Server Error",
}


def isoformat(dt: datetime) -> str:
    """Format like JupyterHub: naive UTC ISO 8601 plus ``Z``; the fraction is dropped when it is zero."""
    return dt.replace(tzinfo=None).isoformat() + "Z"


# ----------------------------------------------------------------------------------------------------------
# An ordered set of user ids with O(log n) "k-th member" (a Fenwick tree over a membership bytearray).
# ----------------------------------------------------------------------------------------------------------

#: What the benchmark token may do, expanded as a JupyterHub 2+ hub lists a service's scopes: everything any
#: benchmark scenario asks of the culler (culling users, removing servers, asking single-user servers).
TOKEN_SCOPES = (
    "list:users",
    "read:users",
    "read:users:name",
    "read:users:activity",
    "read:users:groups",
    "read:servers",
    "delete:servers",
    "admin:users",
    "delete:users",
    "tokens",
)


class OrderedIdSet:
    """Members are ints in ``range(n)``; ``slice(offset, limit)`` returns members in id order."""

    def __init__(self, n: int, members: Iterable[int] = ()) -> None:
        self.n = n
        self.mem = bytearray(n)
        for i in members:
            self.mem[i] = 1
        self.count = sum(self.mem)
        tree = [0] * (n + 1)
        for i in range(1, n + 1):
            tree[i] += self.mem[i - 1]
            j = i + (i & -i)
            if j <= n:
                tree[j] += tree[i]
        self.tree = tree
        top = 1
        while top * 2 <= n:
            top *= 2
        self.top = top if n else 0

    def __contains__(self, i: int) -> bool:
        return bool(self.mem[i])

    def __len__(self) -> int:
        return self.count

    def _update(self, i: int, delta: int) -> None:
        i += 1
        tree, n = self.tree, self.n
        while i <= n:
            tree[i] += delta
            i += i & -i

    def add(self, i: int) -> None:
        if not self.mem[i]:
            self.mem[i] = 1
            self.count += 1
            self._update(i, 1)

    def discard(self, i: int) -> None:
        if self.mem[i]:
            self.mem[i] = 0
            self.count -= 1
            self._update(i, -1)

    def kth(self, k: int) -> int:
        """Id of the member at 0-based rank ``k`` (requires ``k < len(self)``)."""
        pos, rem, step, tree, n = 0, k + 1, self.top, self.tree, self.n
        while step:
            nxt = pos + step
            if nxt <= n and tree[nxt] < rem:
                pos = nxt
                rem -= tree[nxt]
            step >>= 1
        return pos

    def slice(self, offset: int, limit: int) -> list[int]:
        if offset >= self.count or limit <= 0:
            return []
        pos = self.kth(offset)
        out = [pos]
        find = self.mem.find
        while len(out) < limit:
            pos = find(1, pos + 1)
            if pos < 0:
                break
            out.append(pos)
        return out


# ----------------------------------------------------------------------------------------------------------
# The population
# ----------------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class Server:
    name: str
    started: str
    last_activity: str
    idle: bool
    state: int = RUNNING
    kernel_busy: bool = False
    delete_requests: int = 0
    stop_initiations: int = 0
    remove_pending: bool = False
    stop_future: asyncio.Future[None] | None = None


@dataclass(slots=True)
class User:
    uid: int
    name: str
    admin: bool
    created: str
    last_activity: str | None
    spawners: dict[str, Server] = field(default_factory=dict)
    deleted: bool = False
    cache: bytes | None = None

    def active(self) -> bool:
        return any(s.state != STOPPED for s in self.spawners.values())

    def ready(self) -> bool:
        return any(s.state == RUNNING for s in self.spawners.values())


def make_name(rng: random.Random, i: int, odd: bool) -> str:
    if not odd:
        return f"user{i:06d}"
    a, b = rng.sample(ODD_CHARS, 2)
    return f"u{a}{i}{b}x"


def add_server(rng: random.Random, now: datetime, user: User, sname: str, idle: bool) -> datetime:
    """Give ``user`` a running server; idle ones were last active hours ago, active ones seconds ago."""
    if idle:
        last = now - timedelta(hours=rng.uniform(2, 48), microseconds=rng.randrange(1_000_000))
    else:
        last = now - timedelta(seconds=rng.uniform(0, 30))
    started = last - timedelta(hours=rng.uniform(0, 24))
    user.spawners[sname] = Server(sname, isoformat(started), isoformat(last), idle)
    return last


def generate_population(
    *,
    users: int,
    idle_fraction: float,
    seed: int,
    named_fraction: float,
    admin_fraction: float,
    no_server_fraction: float,
    odd_name_fraction: float,
) -> list[User]:
    """Users with a default server (idle or active) and, for some, a named server; deterministic per seed."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    n_idle = round(users * idle_fraction)
    idle_ids = set(rng.sample(range(users), n_idle))
    n_none = round(users * no_server_fraction)
    none_ids = set(rng.sample(sorted(set(range(users)) - idle_ids), min(n_none, users - n_idle)))
    out: list[User] = []
    for i in range(users):
        created = now - timedelta(days=rng.uniform(1, 400))
        name = make_name(rng, i, rng.random() < odd_name_fraction)
        user = User(
            uid=i,
            name=name,
            admin=rng.random() < admin_fraction,
            created=isoformat(created),
            last_activity=None,
        )
        activity: list[datetime] = []
        if i not in none_ids:
            activity.append(add_server(rng, now, user, "", i in idle_ids))
        if rng.random() < named_fraction:
            sname = f"nb-{i}" if rng.random() < 0.8 else f"lab {rng.choice(ODD_CHARS)}{i}"
            activity.append(add_server(rng, now, user, sname, rng.random() < idle_fraction))
        if activity:
            user.last_activity = isoformat(max(activity))
        out.append(user)
    return out


@dataclass(slots=True)
class Options:
    stop_latency: float = 0.0
    slow_stop_timeout: float = 10.0
    page_default: int = 50
    page_max: int = 200
    named_servers: bool = False
    token: str = "bench-token"
    version: str = "5.2.1"
    fail_rate: float = 0.0
    fail_kinds: frozenset[str] = frozenset({"list", "delete"})
    list_latency: float = 0.0
    seed: int = 0
    kernel_latency: float = 0.0
    busy_fraction: float = 0.0


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""


class Hub:
    """State and request semantics; the HTTP layer is ``HttpProtocol``."""

    def __init__(self, population: list[User], opts: Options) -> None:
        self.opts = opts
        self.users = population
        self.by_name = {u.name: u for u in population}
        n = len(population)
        self.all = OrderedIdSet(n, range(n))
        self.active = OrderedIdSet(n, (u.uid for u in population if u.active()))
        self.inactive = OrderedIdSet(n, (u.uid for u in population if not u.active()))
        self.fail_rng = random.Random(opts.seed + 1)
        servers = [s for u in population for s in u.spawners.values()]
        if opts.busy_fraction > 0:
            # A separate generator: the population stays what it is for the same seed without kernels.
            busy_rng = random.Random(opts.seed + 2)
            idle_servers = [s for s in servers if s.idle]
            for s in busy_rng.sample(idle_servers, round(opts.busy_fraction * len(idle_servers))):
                # Busy kernels protect their servers: for a culler that reads them they are not idle.
                s.kernel_busy, s.idle = True, False
        self.idle_total = sum(1 for s in servers if s.idle)
        self.active_total = len(servers) - self.idle_total
        self.pending_stops = 0
        # Tokens minted for users' servers: secret -> (id, user, server); id -> secret. Not reset by /_bench/reset.
        self.tokens: dict[str, tuple[str, str, str]] = {}
        self.token_ids: dict[str, str] = {}
        self.tokens_minted = 0
        self.tokens_revoked = 0
        self.hub_token_at_servers = 0
        self.reset()

    # -- statistics ------------------------------------------------------------------------------------
    def reset(self) -> None:
        self.requests: dict[str, int] = {}
        self.statuses: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.connections = 0
        self.first_request: tuple[float, float] | None = None
        self.first_delete: tuple[float, float] | None = None
        self.last_request: tuple[float, float] | None = None
        self.last_response: tuple[float, float] | None = None
        self.list_service_s = 0.0
        self.list_items = 0
        # correctness ledger (kept incrementally so that /_bench/stats stays cheap)
        self.idle_stop_started = 0
        self.idle_stopped = 0
        self.active_stop_started = 0
        self.redundant_deletes = 0
        self.multi_stopped = 0
        self.users_deleted = 0

    def stats(self, detail: bool) -> dict[str, Any]:
        ru = os.times()
        out: dict[str, Any] = {
            "population": {
                "users": len(self.users),
                "idle_servers": self.idle_total,
                "active_servers": self.active_total,
                "active_users": len(self.active),
                "ready_users": sum(1 for i in range(len(self.users)) if i in self.active and self.users[i].ready())
                if detail
                else None,
                "page_default": self.opts.page_default,
                "page_max": self.opts.page_max,
                "stop_latency": self.opts.stop_latency,
                "slow_stop_timeout": self.opts.slow_stop_timeout,
            },
            "requests": dict(self.requests),
            "statuses": dict(self.statuses),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "connections": self.connections,
            "pending_stops": self.pending_stops,
            "first_request": self.first_request,
            "first_delete": self.first_delete,
            "last_request": self.last_request,
            "last_response": self.last_response,
            "now": (time.monotonic(), time.time()),
            "list_service_s": self.list_service_s,
            "list_items": self.list_items,
            "correctness": {
                "idle_total": self.idle_total,
                "idle_stop_started": self.idle_stop_started,
                "idle_stopped": self.idle_stopped,
                "idle_remaining": self.idle_total - self.idle_stop_started,
                "active_stopped": self.active_stop_started,
                "redundant_deletes": self.redundant_deletes,
                "servers_stopped_more_than_once": self.multi_stopped,
                "users_deleted": self.users_deleted,
            },
            "hub_cpu_s": ru.user + ru.system,
            "tokens": {
                "minted": self.tokens_minted,
                "revoked": self.tokens_revoked,
                "live": len(self.tokens),
                "hub_token_at_servers": self.hub_token_at_servers,
            },
        }
        if detail:
            idle_left: list[str] = []
            active_hit: list[str] = []
            multi: list[str] = []
            for u in self.users:
                for s in u.spawners.values():
                    label = f"{u.name}/{s.name}" if s.name else u.name
                    if s.idle and s.stop_initiations == 0 and not u.deleted:
                        idle_left.append(label)
                    if not s.idle and s.stop_initiations:
                        active_hit.append(label)
                    if s.delete_requests > 1:
                        multi.append(f"{label} x{s.delete_requests}")
            out["detail"] = {
                "idle_remaining_sample": idle_left[:50],
                "idle_remaining_count": len(idle_left),
                "active_stopped_sample": active_hit[:50],
                "deleted_more_than_once_sample": multi[:50],
                "deleted_more_than_once_count": len(multi),
            }
        return out

    # -- state changes ---------------------------------------------------------------------------------
    def _refresh_sets(self, user: User) -> None:
        user.cache = None
        if user.deleted:
            self.all.discard(user.uid)
            self.active.discard(user.uid)
            self.inactive.discard(user.uid)
        elif user.active():
            self.active.add(user.uid)
            self.inactive.discard(user.uid)
        else:
            self.active.discard(user.uid)
            self.inactive.add(user.uid)

    def _begin_stop(self, user: User, server: Server) -> asyncio.Future[None] | None:
        server.state = STOPPING
        server.stop_initiations += 1
        if server.stop_initiations == 2:
            self.multi_stopped += 1
        if server.idle:
            self.idle_stop_started += 1
        else:
            self.active_stop_started += 1
        user.cache = None
        if self.opts.stop_latency <= 0:
            self._complete_stop(user, server, None)
            return None
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        server.stop_future = fut
        self.pending_stops += 1
        asyncio.get_running_loop().call_later(self.opts.stop_latency, self._complete_stop, user, server, fut)
        return fut

    def _complete_stop(self, user: User, server: Server, fut: asyncio.Future[None] | None) -> None:
        server.state = STOPPED
        server.stop_future = None
        if fut is not None:
            self.pending_stops -= 1
            if not fut.done():
                fut.set_result(None)
        if server.idle:
            self.idle_stopped += 1
        if server.remove_pending:
            user.spawners.pop(server.name, None)
        self._refresh_sets(user)

    # -- models ----------------------------------------------------------------------------------------
    def user_json(self, user: User) -> bytes:
        cached = user.cache
        if cached is not None:
            return cached
        quoted = quote(user.name, safe="@~")
        servers: dict[str, Any] = {}
        for sname, s in user.spawners.items():
            if s.state == STOPPED:
                continue
            qs = quote(sname, safe="@~")
            url = f"/user/{quoted}/{qs + '/' if sname else ''}"
            servers[sname] = {
                "name": sname,
                "full_name": f"{user.name}/{sname}" if sname else user.name,
                "last_activity": s.last_activity,
                "started": s.started,
                "pending": "stop" if s.state == STOPPING else None,
                "ready": s.state == RUNNING,
                "stopped": False,
                "url": url,
                "user_options": {},
                "progress_url": f"/hub/api/users/{quoted}/server{'s/' + qs if sname else ''}/progress",
                "full_url": None,
                "full_progress_url": None,
            }
        default = user.spawners.get("")
        model = {
            "kind": "user",
            "name": user.name,
            "admin": user.admin,
            "roles": ["admin", "user"] if user.admin else ["user"],
            "groups": [],
            "server": f"/user/{quoted}/" if default is not None and default.state == RUNNING else None,
            "pending": "stop" if default is not None and default.state == STOPPING else None,
            "created": user.created,
            "last_activity": user.last_activity,
            "auth_state": None,
            "servers": servers,
        }
        user.cache = json.dumps(model, separators=(",", ":"), ensure_ascii=False).encode()
        return user.cache

    # -- handlers --------------------------------------------------------------------------------------
    def authorized(self, headers: dict[bytes, bytes]) -> bool:
        if not self.opts.token:
            return True
        value = headers.get(b"authorization", b"").decode("latin-1").strip()
        scheme, _, token = value.partition(" ")
        return scheme.lower() in ("token", "bearer") and token.strip() == self.opts.token

    def should_fail(self, kind: str) -> bool:
        return self.opts.fail_rate > 0 and kind in self.opts.fail_kinds and self.fail_rng.random() < self.opts.fail_rate

    def list_users(self, query: dict[str, list[str]], headers: dict[bytes, bytes], host: str, raw: str) -> Response:
        paginate = PAGINATION_MEDIA.encode() in headers.get(b"accept", b"")
        state = query.get("state", [None])[-1]
        default_limit = self.opts.page_default if paginate else self.opts.page_max
        try:
            offset = abs(int(query.get("offset", ["0"])[-1]))
            limit = abs(int(query.get("limit", [str(default_limit)])[-1]))
        except ValueError:
            return error(400, "Invalid argument type, offset and limit must be integers")
        limit = max(1, min(limit, self.opts.page_max))
        if state in ("active", "ready"):
            pool = self.active
        elif state == "inactive":
            pool = self.inactive
        elif state is None:
            pool = self.all
        else:
            return error(400, f"Unrecognized state filter: {state!r}")
        ids = pool.slice(offset, limit)
        total = len(pool)
        users = self.users
        if state == "ready":
            ids = [i for i in ids if users[i].ready()]
        self.list_items += len(ids)
        items = b"[" + b",".join([self.user_json(users[i]) for i in ids]) + b"]"
        if not paginate:
            return Response(200, items)
        nxt: dict[str, Any] | None = None
        if offset + limit < total:
            q = parse_qs(raw, keep_blank_values=True)
            q["offset"] = [str(offset + limit)]
            q["limit"] = [str(limit)]
            nxt = {
                "offset": offset + limit,
                "limit": limit,
                "url": f"http://{host}{API_PREFIX}/users?{urlencode(q, doseq=True)}",
            }
        meta = json.dumps({"offset": offset, "limit": limit, "total": total, "next": nxt}).encode()
        return Response(200, b'{"items":' + items + b',"_pagination":' + meta + b"}")

    async def _await_stop(self, fut: asyncio.Future[None] | None) -> Response:
        if fut is None:
            return Response(204)
        if self.opts.stop_latency <= self.opts.slow_stop_timeout:
            await fut
            return Response(204)
        done, _ = await asyncio.wait([fut], timeout=self.opts.slow_stop_timeout)
        return Response(204 if done else 202)

    def delete_server(self, user: User, sname: str, named_route: bool, body: bytes) -> Response | Awaitable[Response]:
        remove = False
        if body.strip():
            try:
                data = json.loads(body)
            except ValueError:
                return error(400, "Invalid JSON in body")
            remove = bool(isinstance(data, dict) and data.get("remove", False))
        if named_route:
            if not self.opts.named_servers:
                return error(400, "Named servers are not enabled.")
            if sname not in user.spawners:
                return error(404, f"{user.name} has no server named '{sname}'")
        elif remove:
            return error(400, "Cannot delete the default server")
        server = user.spawners.get(sname)
        if server is None:
            # a user without a default spawner: the hub creates one, which is not running
            return Response(204)
        server.delete_requests += 1
        if server.state == STOPPING:
            self.redundant_deletes += 1
            if remove:
                server.remove_pending = True
            return Response(202)
        if server.state == STOPPED:
            self.redundant_deletes += 1
            if remove:
                user.spawners.pop(sname, None)
                user.cache = None
            return Response(204)
        server.remove_pending = remove
        fut = self._begin_stop(user, server)
        if fut is None:
            return Response(204)
        return self._await_stop(fut)

    async def _delete_user_after_stop(self, user: User, fut: asyncio.Future[None]) -> Response:
        resp = await self._await_stop(fut)
        if resp.status == 202:
            return error(400, f"{user.name}'s server is in the process of stopping, please wait.")
        return self._finish_delete_user(user)

    def _finish_delete_user(self, user: User) -> Response:
        for s in user.spawners.values():
            if s.state == RUNNING and not s.idle:
                self.active_stop_started += 1
        user.deleted = True
        self.users_deleted += 1
        del self.by_name[user.name]
        self._refresh_sets(user)
        return Response(204)

    def delete_user(self, user: User) -> Response | Awaitable[Response]:
        default = user.spawners.get("")
        if default is not None and default.state == STOPPING:
            return error(400, f"{user.name}'s server is in the process of stopping, please wait.")
        if default is not None and default.state == RUNNING:
            default.delete_requests += 1
            fut = self._begin_stop(user, default)
            if fut is not None:
                return self._delete_user_after_stop(user, fut)
        return self._finish_delete_user(user)

    def route(
        self, method: str, target: str, headers: dict[bytes, bytes], body: bytes
    ) -> tuple[str, Response | Awaitable[Response]]:
        """Return (kind, response or awaitable response)."""
        path, _, raw_query = target.partition("?")
        if path.startswith("/_bench/"):
            if path == "/_bench/stats":
                detail = "detail=1" in raw_query
                return "bench", Response(200, json.dumps(self.stats(detail)).encode())
            if path == "/_bench/reset":
                self.reset()
                return "bench", Response(200, b"{}")
            return "bench", error(404, "no such bench endpoint")
        if path.startswith("/user/"):
            return self.single_user(method, path, headers)
        if not path.startswith(API_PREFIX):
            return "other", error(404, "Not Found")
        rest = path[len(API_PREFIX) :]
        if rest in ("", "/"):
            if method != "GET":
                return "other", error(405, "Method Not Allowed")
            return "version", Response(200, json.dumps({"version": self.opts.version}).encode())
        parts = [unquote(p, errors="strict") for p in rest.strip("/").split("/")]
        if parts == ["user"]:
            # Who the token is: trio-culler checks its scopes once per pass, as it does against a real hub.
            if method != "GET":
                return "other", error(405, "Method Not Allowed")
            if not self.authorized(headers):
                return "forbidden", error(403, "Missing or invalid credentials")
            model = {"kind": "service", "name": "idle-culler", "scopes": list(TOKEN_SCOPES)}
            return "token_owner", Response(200, json.dumps(model).encode())
        if parts[0] != "users":
            return "other", error(404, "Not Found")
        if not self.authorized(headers):
            return "forbidden", error(403, "Missing or invalid credentials")
        if len(parts) == 1:
            if method != "GET":
                return "other", error(405, "Method Not Allowed")
            if self.should_fail("list"):
                return "list", error(500, "injected failure")
            host = headers.get(b"host", b"127.0.0.1").decode("latin-1")
            query = parse_qs(raw_query, keep_blank_values=True)
            if self.opts.list_latency > 0:
                return "list", self._slow(self.list_users(query, headers, host, raw_query))
            return "list", self.list_users(query, headers, host, raw_query)
        user = self.by_name.get(parts[1])
        if len(parts) == 2:
            if method == "GET":
                return "get_user", Response(200, self.user_json(user)) if user else error(404, "Not Found")
            if method != "DELETE":
                return "other", error(405, "Method Not Allowed")
            if self.should_fail("delete"):
                return "delete_user", error(500, "injected failure")
            return "delete_user", self.delete_user(user) if user else error(404, "Not Found")
        if len(parts) >= 3 and parts[2] == "tokens":
            return self.tokens_endpoint(method, user, parts, body)
        if method != "DELETE":
            return "other", error(405, "Method Not Allowed")
        if len(parts) == 3 and parts[2] == "server":
            kind, sname, named = "delete_server", "", False
        elif len(parts) == 4 and parts[2] == "servers":
            kind, sname, named = "delete_named_server", parts[3], True
        else:
            return "other", error(404, "Not Found")
        if self.should_fail("delete"):
            return kind, error(500, "injected failure")
        if user is None:
            return kind, error(404, "Not Found")
        return kind, self.delete_server(user, sname, named, body)

    def tokens_endpoint(
        self, method: str, user: User | None, parts: list[str], body: bytes
    ) -> tuple[str, Response | Awaitable[Response]]:
        """Mint a token for one server of ``user`` (the only scope asked for here), or revoke one."""
        if len(parts) == 3 and method == "POST":
            if user is None:
                return "mint", error(404, "Not Found")
            try:
                scopes = json.loads(body or b"{}").get("scopes")
            except (ValueError, AttributeError):
                return "mint", error(400, "Invalid JSON in body of request")
            prefix = f"access:servers!server={user.name}/"
            if not (isinstance(scopes, list) and len(scopes) == 1 and str(scopes[0]).startswith(prefix)):
                return "mint", error(400, f"Not assigning requested scopes {scopes!r}")
            self.tokens_minted += 1
            token_id, secret = f"a{self.tokens_minted}", secrets.token_hex(16)
            self.tokens[secret] = (token_id, user.name, scopes[0][len(prefix) :])
            self.token_ids[token_id] = secret
            now = datetime.now(UTC)
            model = {
                "token": secret,
                "id": token_id,
                "user": user.name,
                "scopes": [scopes[0], f"read:users:name!user={user.name}", f"read:users:groups!user={user.name}"],
                "created": isoformat(now),
                "expires_at": None,
            }
            return "mint", Response(201, json.dumps(model).encode())
        if len(parts) == 4 and method == "DELETE":
            held = self.token_ids.get(parts[3])
            if user is None or held is None or self.tokens[held][1] != user.name:
                return "revoke", error(404, "Not Found")
            del self.tokens[held], self.token_ids[parts[3]]
            self.tokens_revoked += 1
            return "revoke", Response(204)
        return "other", error(405, "Method Not Allowed")

    def server_token_ok(self, headers: dict[bytes, bytes], user: str, server: str) -> bool:
        """Whether a single-user server takes the request's token: one minted for it, never the hub's."""
        if not self.opts.token:
            return True
        if self.authorized(headers):
            self.hub_token_at_servers += 1
            return False
        scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        return scheme.lower() == "token" and self.tokens.get(token.strip(), ("", "", ""))[1:] == (user, server)

    async def _slow(self, resp: Response) -> Response:
        await asyncio.sleep(self.opts.list_latency)
        return resp

    def single_user(
        self, method: str, path: str, headers: dict[bytes, bytes]
    ) -> tuple[str, Response | Awaitable[Response]]:
        """A single-user server behind the proxy: jupyter_server's api/kernels and api/terminals."""
        parts = [unquote(p, errors="strict") for p in path[len("/user/") :].split("/")]
        if len(parts) == 3 and parts[1] == "api":
            name, sname, endpoint = parts[0], "", parts[2]
        elif len(parts) == 4 and parts[2] == "api":
            name, sname, endpoint = parts[0], parts[1], parts[3]
        else:
            return "other", error(404, "Not Found")
        kind = {"kernels": "kernels", "terminals": "terminals", "status": "status"}.get(endpoint, "other")
        user = self.by_name.get(name)
        server = user.spawners.get(sname) if user is not None else None
        if kind == "other" or server is None or server.state != RUNNING:
            return kind, error(404, "Not Found")
        if method != "GET":
            return kind, error(405, "Method Not Allowed")
        if not self.server_token_ok(headers, name, sname):
            return kind, error(403, "Forbidden")
        if kind == "terminals":
            body = b"[]"
        elif kind == "status":
            # jupyter_server's own record of its activity, which the culler's requests do not move.
            status = {"started": server.started, "last_activity": server.last_activity, "connections": 0, "kernels": 1}
            body = json.dumps(status).encode()
        else:
            kernel = {
                "id": f"kernel-{user.uid if user else 0}-{sname}",
                "name": "python3",
                "last_activity": server.last_activity,
                "execution_state": "busy" if server.kernel_busy else "idle",
                "connections": 0,
            }
            body = json.dumps([kernel]).encode()
        if self.opts.kernel_latency > 0 and kind != "terminals":
            return kind, self._after(self.opts.kernel_latency, Response(200, body))
        return kind, Response(200, body)

    async def _after(self, seconds: float, resp: Response) -> Response:
        await asyncio.sleep(seconds)
        return resp


def error(status: int, message: str) -> Response:
    return Response(status, json.dumps({"status": status, "message": message}).encode())


# ----------------------------------------------------------------------------------------------------------
# HTTP/1.1
# ----------------------------------------------------------------------------------------------------------
class HttpProtocol(asyncio.Protocol):
    """One connection; requests are served one after another (clients here do not pipeline)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.buf = bytearray()
        self.busy = False
        self.closed = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.hub.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self.process()

    def process(self) -> None:
        while not self.closed:
            buf = self.buf
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > 65536:
                    self.close()
                return
            head = bytes(buf[:end]).split(b"\r\n")
            try:
                method_b, target_b, version = head[0].split(b" ", 2)
            except ValueError:
                self.close()
                return
            headers: dict[bytes, bytes] = {}
            for line in head[1:]:
                k, _, v = line.partition(b":")
                headers[k.strip().lower()] = v.strip()
            pos = end + 4
            body = b""
            if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
                chunks: list[bytes] = []
                while True:
                    eol = buf.find(b"\r\n", pos)
                    if eol < 0:
                        return
                    size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
                    if len(buf) < eol + 2 + size + 2:
                        return
                    chunks.append(bytes(buf[eol + 2 : eol + 2 + size]))
                    pos = eol + 2 + size + 2
                    if size == 0:
                        break
                body = b"".join(chunks)
            else:
                length = int(headers.get(b"content-length", b"0") or 0)
                if len(buf) < pos + length:
                    return
                body = bytes(buf[pos : pos + length])
                pos += length
            del buf[:pos]
            conn = headers.get(b"connection", b"").lower()
            keep_alive = b"close" not in conn if version == b"HTTP/1.1" else b"keep-alive" in conn
            if not self.handle(method_b.decode("latin-1"), target_b.decode("latin-1"), headers, body, keep_alive):
                return

    def handle(self, method: str, target: str, headers: dict[bytes, bytes], body: bytes, keep_alive: bool) -> bool:
        """Serve one request; False when the connection must wait (async response) or is closed."""
        hub = self.hub
        now = (time.monotonic(), time.time())
        t0 = now[0]
        try:
            kind, result = hub.route(method, target, headers, body)
        except Exception as exc:  # a bug or a malformed request: answer, never die
            kind, result = "other", error(500 if not isinstance(exc, UnicodeDecodeError) else 400, repr(exc))
        counted = kind != "bench"
        if counted:
            if hub.first_request is None:
                hub.first_request = now
            hub.last_request = now
            if method == "DELETE" and kind != "revoke" and hub.first_delete is None:
                hub.first_delete = now
            hub.requests[kind] = hub.requests.get(kind, 0) + 1
            hub.in_flight += 1
            if hub.in_flight > hub.max_in_flight:
                hub.max_in_flight = hub.in_flight
        if isinstance(result, Response):
            self.respond(kind, result, keep_alive, counted, t0)
            return keep_alive and not self.closed
        self.busy = True
        task = asyncio.ensure_future(self.finish(kind, result, keep_alive, counted, t0))
        TASKS.add(task)
        task.add_done_callback(TASKS.discard)
        return False

    async def finish(self, kind: str, result: Awaitable[Response], keep_alive: bool, counted: bool, t0: float) -> None:
        try:
            resp = await result
        except Exception as exc:
            resp = error(500, repr(exc))
        self.busy = False
        self.respond(kind, resp, keep_alive, counted, t0)
        if keep_alive and not self.closed and self.buf:
            self.process()

    def respond(self, kind: str, resp: Response, keep_alive: bool, counted: bool, t0: float) -> None:
        hub = self.hub
        status = resp.status
        parts = [b"HTTP/1.1 ", str(status).encode(), b" ", REASONS.get(status, b"Unknown"), b"\r\n"]
        if status == 204:
            parts.append(b"Content-Type: text/plain\r\n")
        else:
            parts += [
                b"Content-Type: application/json\r\nContent-Length: ",
                str(len(resp.body)).encode(),
                b"\r\n",
            ]
        if not keep_alive:
            parts.append(b"Connection: close\r\n")
        parts.append(b"\r\n")
        if status != 204:
            parts.append(resp.body)
        if not self.closed and self.transport is not None:
            self.transport.write(b"".join(parts))
            if not keep_alive:
                self.close()
        if counted:
            now = (time.monotonic(), time.time())
            hub.in_flight -= 1
            hub.last_response = now
            key = f"{kind}:{status}"
            hub.statuses[key] = hub.statuses.get(key, 0) + 1
            if kind == "list":
                hub.list_service_s += now[0] - t0

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


async def serve(hub: Hub, port: int, max_lifetime: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: HttpProtocol(hub), "127.0.0.1", port, backlog=1024, reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"{bound}\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), timeout=max_lifetime)
    except TimeoutError:
        sys.stderr.write(f"fakehub: --max-lifetime {max_lifetime}s reached, exiting\n")
    server.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free one)")
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--idle-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stop-latency", type=float, default=0.0, help="seconds a stop takes")
    p.add_argument("--slow-stop-timeout", type=float, default=10.0, help="answer 202 when a stop takes longer")
    p.add_argument("--page-default", type=int, default=50)
    p.add_argument("--page-max", type=int, default=200)
    p.add_argument("--named-fraction", type=float, default=0.0, help="users with a named server too (enables them)")
    p.add_argument("--named-servers", action="store_true", help="enable named servers even if none exist")
    p.add_argument("--admin-fraction", type=float, default=0.0)
    p.add_argument("--no-server-fraction", type=float, default=0.0, help="users with no server at all")
    p.add_argument("--odd-name-fraction", type=float, default=0.0, help="user names with @ + # ? ; %% space ü ...")
    p.add_argument("--fail-rate", type=float, default=0.0, help="answer this fraction of requests with 500")
    p.add_argument("--fail-kinds", default="list,delete", help="comma list from: list, delete")
    p.add_argument("--list-latency", type=float, default=0.0, help="extra seconds per GET /users")
    p.add_argument("--kernel-latency", type=float, default=0.0, help="seconds a server takes to answer api/kernels")
    p.add_argument("--busy-fraction", type=float, default=0.0, help="idle servers whose kernel is busy")
    p.add_argument("--token", default="bench-token", help="required API token ('' disables auth)")
    p.add_argument("--hub-version", default="5.2.1")
    p.add_argument("--max-lifetime", type=float, default=3600.0, help="exit by itself after this many seconds")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    population = generate_population(
        users=args.users,
        idle_fraction=args.idle_fraction,
        seed=args.seed,
        named_fraction=args.named_fraction,
        admin_fraction=args.admin_fraction,
        no_server_fraction=args.no_server_fraction,
        odd_name_fraction=args.odd_name_fraction,
    )
    opts = Options(
        stop_latency=args.stop_latency,
        slow_stop_timeout=args.slow_stop_timeout,
        page_default=args.page_default,
        page_max=args.page_max,
        named_servers=args.named_servers or args.named_fraction > 0,
        token=args.token,
        version=args.hub_version,
        fail_rate=args.fail_rate,
        fail_kinds=frozenset(k.strip() for k in args.fail_kinds.split(",") if k.strip()),
        list_latency=args.list_latency,
        seed=args.seed,
        kernel_latency=args.kernel_latency,
        busy_fraction=args.busy_fraction,
    )
    hub = Hub(population, opts)
    asyncio.run(serve(hub, args.port, args.max_lifetime))


if __name__ == "__main__":
    main()
