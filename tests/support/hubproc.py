"""A populated FakeHub in a process of its own, for the tests that run the real command line against it.

::

    python -m tests.support.hubproc --users 30 --idle 0.4 --stop-latency 0.2 [--fail-user user-03] [--echo-auth]

The token is read from ``$JUPYTERHUB_API_TOKEN`` (never from argv, where ``ps`` would show it). The hub serves on
127.0.0.1 (a free port) and prints one JSON object per line on stdout, each with ``"t"``, ``time.monotonic()``
when it was written (so that a test can compare it with the moment it sent a signal):

- once it listens, ``{"event": "ready", "url": ".../hub/api", "stats_url": ..., "fail_url": ..., "users": [...],
  "servers": [...], "idle": ["user-03", "user-07/named", ...], "idle_users": [...]}``. ``idle`` lists the servers
  idle for at least two hours (``user`` for a default server, ``user/name`` for a named one); every other server
  was active within the last minute, so a culler with a timeout between the two must stop exactly ``idle``;
- for each DELETE, ``{"event": "delete", "path": ...}`` as it arrives and ``{"event": "answered", "path": ...,
  "status": ...}`` when it is answered.

``--name-json '"x\\n[I ...] forged"'`` adds a user of that name (any text, as a JSON string) with a default server
idle for hours: a hostile name for the log tests. ``GET /_ops/stats`` (no token) answers what the hub saw, as
JSON: requests by kind, DELETEs per server, stops completed, users deleted, servers still running and status
codes. ``--fail-user NAME`` (or ``GET /_ops/fail?user=NAME`` once running) makes every DELETE about that user
answer 500. ``--echo-auth`` makes the hub quote the request's Authorization header in error messages (a 500 for
the first attempt at every stop, a 403 for ``GET /users`` with ``--refuse-listing``): the careless behaviour a
culler must not pass on. It exits on SIGTERM/SIGINT, or after ``--max-lifetime`` seconds so that a failed test
cannot leave it running.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import httpx
import trio

from trio_culler.testing import FakeHub, FakeServer, Population, open_fake_hub

__all__ = ["FAIL_PATH", "STATS_PATH", "main", "parse_args"]

STATS_PATH = "/_ops/stats"
FAIL_PATH = "/_ops/fail"


def emit(event: str, **fields: Any) -> None:
    # One JSON object per line, flushed at once: the test reads them while this process runs.
    print(json.dumps({"event": event, "t": time.monotonic(), **fields}), flush=True)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.support.hubproc", description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=20, help="users, each with a ready default server")
    parser.add_argument("--idle", type=float, default=1.0, help="fraction of the servers idle for hours")
    parser.add_argument("--named", type=float, default=0.0, help="fraction of the users with a named server too")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--stop-latency", type=float, default=0.0, help="seconds a server takes to stop")
    parser.add_argument("--slow-stop-timeout", type=float, help="answer 202 to a stop after this long")
    parser.add_argument("--list-latency", type=float, default=0.0, help="seconds a GET /users takes")
    parser.add_argument("--page-size", type=int, default=50, help="the hub's api_page_default_limit")
    parser.add_argument("--name-json", action="append", default=[], help="one more idle user, named in JSON")
    parser.add_argument("--fail-user", action="append", default=[], help="answer 500 to DELETEs about this user")
    parser.add_argument("--echo-auth", action="store_true", help="quote the Authorization header in errors")
    parser.add_argument("--refuse-listing", action="store_true", help="with --echo-auth: 403 on GET /users")
    parser.add_argument("--max-lifetime", type=float, default=300.0, help="exit after this many seconds anyway")
    return parser.parse_args(argv)


def _label(user: str, server: str) -> str:
    return f"{user}/{server}" if server else user


def _user_of(request: httpx.Request) -> str | None:
    """The user a ``/hub/api/users/{name}...`` request is about (the segment decoded once, as the hub does)."""
    segments = request.url.raw_path.split(b"?", 1)[0].decode("ascii", "replace").split("/")
    if segments[1:4] == ["hub", "api", "users"] and len(segments) > 4:
        return unquote(segments[4])
    return None


def _stats(hub: FakeHub) -> dict[str, Any]:
    stats = hub.statistics()
    return {
        "requests_by_kind": dict(stats.requests_by_kind),
        "deletes": sum(stats.requests_by_kind[kind] for kind in ("stop", "remove", "delete_user")),
        "stop_requests": {_label(user, server): count for (user, server), count in stats.stop_requests.items()},
        "stops_completed": [_label(user, server) for user, server in stats.stops_completed],
        "users_deleted": list(stats.users_deleted),
        "running": sorted(_label(user.name, name) for user in hub.users.values() for name in user.servers),
        "status_codes": {str(code): count for code, count in stats.status_codes.items()},
        "in_flight": stats.in_flight,
    }


class ReportingHub(FakeHub):
    """A FakeHub that prints each DELETE as it arrives (before the hub counts it) and when it is answered."""

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if request.method != "DELETE":
            return await super().handle(request)
        path = request.url.path
        emit("delete", path=path)
        response = await super().handle(request)
        emit("answered", path=path, status=response.status_code)
        return response


def make_hub(args: argparse.Namespace, token: str) -> tuple[FakeHub, Population]:
    now = datetime.now(UTC)
    options = {} if args.slow_stop_timeout is None else {"slow_stop_timeout": args.slow_stop_timeout}
    hub = ReportingHub(
        token=token,
        stop_latency=args.stop_latency,
        list_latency=args.list_latency,
        default_page_size=args.page_size,
        **options,
    )
    population = hub.populate(args.users, idle_fraction=args.idle, named_fraction=args.named, seed=args.seed, now=now)
    hostile = [json.loads(text) for text in args.name_json]
    old = now - timedelta(hours=3)
    for name in hostile:
        hub.add_user(name, created=old, last_activity=old, servers={"": FakeServer("", old, old)})
    population = Population(
        users=population.users + tuple(hostile),
        idle=population.idle | {(name, "") for name in hostile},
        active=population.active,
        idle_users=population.idle_users | frozenset(hostile),
        admins=population.admins,
    )
    failing = set(args.fail_user)
    attempts: collections.Counter[str] = collections.Counter()

    async def fault(request: httpx.Request) -> httpx.Response | None:
        path = request.url.path
        if path == STATS_PATH:
            return httpx.Response(200, json=_stats(hub))
        if path == FAIL_PATH:
            failing.add(request.url.params["user"])
            return httpx.Response(200, json=sorted(failing))
        if args.echo_auth:
            quoted = request.headers.get("authorization", "")
            if args.refuse_listing and request.method == "GET" and path.endswith("/users"):
                return httpx.Response(403, json={"status": 403, "message": f"token not accepted: {quoted}"})
            attempts[path] += 1
            if request.method == "DELETE" and attempts[path] == 1:
                return httpx.Response(500, json={"status": 500, "message": f"failed handling {quoted}"})
        if request.method == "DELETE" and _user_of(request) in failing:
            return httpx.Response(500, json={"status": 500, "message": "injected failure"})
        return None

    hub.fault = fault
    return hub, population


async def serve(args: argparse.Namespace, token: str) -> None:
    hub, population = make_hub(args, token)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        with trio.move_on_after(args.max_lifetime):
            async with open_fake_hub(hub) as api_url:
                origin = api_url.removesuffix("/hub/api")
                emit(
                    "ready",
                    url=api_url,
                    stats_url=origin + STATS_PATH,
                    fail_url=origin + FAIL_PATH,
                    users=list(population.users),
                    servers=sorted(_label(user, server) for user, server in population.idle | population.active),
                    idle=sorted(_label(user, server) for user, server in population.idle),
                    idle_users=sorted(population.idle_users),
                )
                async for _signum in signals:
                    break


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
    if not token:
        print("hubproc: JUPYTERHUB_API_TOKEN must be set", file=sys.stderr)
        return 2
    trio.run(serve, args, token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
