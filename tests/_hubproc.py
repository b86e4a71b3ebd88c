"""Serve a populated FakeHub in its own process, for tests that run the real command line against it.

::

    python tests/_hubproc.py --users 40 --idle 1.0 --stop-latency 1.5 [--echo-auth] [--max-lifetime 120]

The token is read from ``$JUPYTERHUB_API_TOKEN`` (never from argv, where ``ps`` would show it). Once listening on
127.0.0.1 it prints one JSON line, ``{"event": "ready", "url": "http://127.0.0.1:PORT/hub/api"}``, then one per
DELETE as it arrives (``"event": "delete"``) and as it is answered (``"event": "answered"``, with the status), each
stamped with ``time.monotonic()`` so that a test can compare them with the moment it sent a signal.

``--echo-auth`` makes the hub quote the request's Authorization header in error messages (a 500 for the first
attempt at every stop, a 403 for ``GET /users`` with ``--refuse-listing``): the careless behaviour a culler must
not pass on. It exits on SIGTERM/SIGINT, or after ``--max-lifetime`` seconds so that a failed test cannot leave it
running.
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
from datetime import UTC, datetime
from typing import Any

import httpx
import trio

from trio_culler.testing import FakeHub, open_fake_hub

__all__ = ["main"]

_NESTED = "x-hubproc-nested"


def _emit(event: str, **fields: Any) -> None:
    # One JSON object per line, flushed at once: the test reads them while this process runs.
    print(json.dumps({"event": event, "t": time.monotonic(), **fields}), flush=True)


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="_hubproc.py")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--idle", type=float, default=1.0, help="fraction of the servers idle for hours")
    parser.add_argument("--stop-latency", type=float, default=0.0, help="seconds each stop takes")
    parser.add_argument("--slow-stop-timeout", type=float, default=120.0, help="answer 202 after this long")
    parser.add_argument("--echo-auth", action="store_true", help="quote the Authorization header in errors")
    parser.add_argument("--refuse-listing", action="store_true", help="with --echo-auth: 403 on GET /users")
    parser.add_argument("--max-lifetime", type=float, default=120.0)
    return parser.parse_args(argv)


def _make_hub(args: argparse.Namespace, token: str) -> FakeHub:
    hub = FakeHub(token=token, stop_latency=args.stop_latency, slow_stop_timeout=args.slow_stop_timeout)
    hub.populate(args.users, idle_fraction=args.idle, seed=7, now=datetime.now(UTC))
    attempts: collections.Counter[str] = collections.Counter()

    async def fault(request: httpx.Request) -> httpx.Response | None:
        # The hub's own answer is fetched by calling hub.handle again, which consults this hook once more; the
        # marker header lets that nested call through (a shared flag would also let other requests through).
        if request.headers.get(_NESTED) == "1":
            return None
        if request.method != "DELETE" and not args.echo_auth:
            return None
        return await _observe_one(request)

    async def _observe_one(request: httpx.Request) -> httpx.Response | None:
        path = request.url.path
        if args.echo_auth:
            quoted = request.headers.get("authorization", "")
            if args.refuse_listing and request.method == "GET" and path.endswith("/users"):
                return httpx.Response(403, json={"status": 403, "message": f"token not accepted: {quoted}"})
            attempts[path] += 1
            if request.method == "DELETE" and attempts[path] == 1:
                return httpx.Response(500, json={"status": 500, "message": f"failed handling {quoted}"})
        if request.method != "DELETE":
            return None
        _emit("delete", path=path)
        nested = httpx.Request(
            request.method,
            request.url,
            headers=[*request.headers.raw, (_NESTED.encode(), b"1")],
            content=await request.aread(),
        )
        response = await hub.handle(nested)
        _emit("answered", path=path, status=response.status_code)
        return response

    hub.fault = fault
    return hub


async def _serve(args: argparse.Namespace, token: str) -> None:
    hub = _make_hub(args, token)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        with trio.move_on_after(args.max_lifetime):
            async with open_fake_hub(hub) as url:
                _emit("ready", url=url)
                async for _signum in signals:
                    break


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
    if not token:
        print("_hubproc.py: JUPYTERHUB_API_TOKEN must be set", file=sys.stderr)
        return 2
    trio.run(_serve, args, token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
