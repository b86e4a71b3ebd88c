"""A populated FakeHub in its own process, for tests that run the real command line against it.

::

    python -m tests.ops_hubproc --users 30 --idle 0.4 --stop-latency 0.2 --token T [--fail-user user-03]

Serves on 127.0.0.1 (a free port) and prints ONE JSON line on stdout once it listens::

    {"url": "http://127.0.0.1:PORT/hub/api", "stats_url": ".../_ops/stats", "fail_url": ".../_ops/fail",
     "users": [...], "servers": [...], "idle": ["user-03", "user-07/named", ...], "idle_users": [...]}

``idle`` lists the servers idle for at least two hours (``user`` for a default server, ``user/name`` for a named
one); every other server was active within the last minute, so a culler with a timeout between the two must
stop exactly ``idle``. Then it serves until SIGTERM/SIGINT or ``--max-lifetime`` seconds, whichever comes first.

``GET /_ops/stats`` (no token) answers what the hub saw, as JSON: requests by kind (``list``, ``stop``,
``remove``, ``delete_user``, ...), DELETEs per server, stops completed, users deleted, servers still running and
status codes answered. ``--fail-user NAME`` (or ``GET /_ops/fail?user=NAME`` once running) makes every DELETE
about that user (its servers or itself) answer 500, which a culler must record as an error.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import httpx
import trio

from trio_culler.testing import FakeHub, open_fake_hub

__all__ = ["FAIL_PATH", "STATS_PATH", "main", "parse_args"]

STATS_PATH = "/_ops/stats"
FAIL_PATH = "/_ops/fail"


def _label(user: str, server: str) -> str:
    return f"{user}/{server}" if server else user


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.ops_hubproc", description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=20, help="users, each with a ready default server")
    parser.add_argument("--idle", type=float, default=0.5, help="fraction of the servers that are idle")
    parser.add_argument("--named", type=float, default=0.0, help="fraction of the users with a named server too")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--stop-latency", type=float, default=0.0, help="seconds a server takes to stop")
    parser.add_argument("--list-latency", type=float, default=0.0, help="seconds a GET /users takes")
    parser.add_argument("--page-size", type=int, default=50, help="the hub's api_page_default_limit")
    parser.add_argument("--token", required=True, help="the only API token the hub accepts")
    parser.add_argument("--fail-user", action="append", default=[], help="answer 500 to DELETEs about this user")
    parser.add_argument("--max-lifetime", type=float, default=300.0, help="exit after this many seconds anyway")
    return parser.parse_args(argv)


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


async def serve(args: argparse.Namespace) -> None:
    now = datetime.now(UTC)
    hub = FakeHub(
        token=args.token,
        stop_latency=args.stop_latency,
        list_latency=args.list_latency,
        default_page_size=args.page_size,
    )
    population = hub.populate(args.users, idle_fraction=args.idle, named_fraction=args.named, seed=args.seed, now=now)
    failing = set(args.fail_user)

    async def fault(request: httpx.Request) -> httpx.Response | None:
        if request.url.path == STATS_PATH:
            return httpx.Response(200, json=_stats(hub))
        if request.url.path == FAIL_PATH:
            failing.add(request.url.params["user"])
            return httpx.Response(200, json=sorted(failing))
        if request.method == "DELETE" and _user_of(request) in failing:
            return httpx.Response(500, json={"status": 500, "message": "injected failure"})
        return None

    hub.fault = fault
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with open_fake_hub(hub) as api_url:
            origin = api_url.removesuffix("/hub/api")
            announcement = {
                "url": api_url,
                "stats_url": origin + STATS_PATH,
                "fail_url": origin + FAIL_PATH,
                "users": list(population.users),
                "servers": sorted(_label(user, server) for user, server in population.idle | population.active),
                "idle": sorted(_label(user, server) for user, server in population.idle),
                "idle_users": sorted(population.idle_users),
            }
            print(json.dumps(announcement), flush=True)
            with trio.move_on_after(args.max_lifetime):
                async for _signum in signals:
                    break


def main(argv: Sequence[str] | None = None) -> None:
    trio.run(serve, parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
