#!/usr/bin/env python3
"""Measure the fake hub's own capacity with a small, bounded, concurrent load loop on 127.0.0.1.

Each phase runs ``--concurrency`` keep-alive connections (or a new connection per request for the
``*_close`` phases, as tornado's simple HTTP client does) for at most ``--duration`` seconds and at
most ``--max-requests`` requests, and reports requests/s, latency percentiles and the hub's CPU time
over the phase (read from ``/proc/<hub-pid>/stat``). Because the hub is one single-threaded process,
``requests/s / hub CPU share`` estimates what it could serve when saturated.

Phases: ``version`` (GET /hub/api/), ``pages`` (GET 200-user pages with the pagination header),
``pages_close`` (the same, one connection per request), ``delete`` (instant stops of distinct
default servers; needs a population whose names are ``user%06d``). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Callable
from typing import Any

PAGINATION = "application/jupyterhub-pagination+json"
TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    """user + system CPU seconds of ``pid`` from /proc (fields 14 and 15 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    close = False
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        name = k.strip().lower()
        if name == b"content-length":
            length = int(v)
        elif name == b"connection" and b"close" in v.lower():
            close = True
    body = await reader.readexactly(length) if length else b""
    return status, body, close


class Phase:
    def __init__(self, duration: float, max_requests: int) -> None:
        self.deadline = time.monotonic() + duration
        self.remaining = max_requests
        self.latencies: list[float] = []
        self.errors = 0
        self.statuses: dict[int, int] = {}

    def take(self) -> bool:
        if self.remaining <= 0 or time.monotonic() >= self.deadline:
            return False
        self.remaining -= 1
        return True


async def worker(port: int, phase: Phase, make_request: Callable[[], bytes | None], new_connection_each: bool) -> None:
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    try:
        while phase.take():
            req = make_request()
            if req is None:
                return
            if writer is None or new_connection_each:
                if writer is not None:
                    writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert reader is not None
            t0 = time.monotonic()
            writer.write(req)
            try:
                status, _, close = await read_response(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                phase.errors += 1
                writer.close()
                writer = None
                continue
            phase.latencies.append(time.monotonic() - t0)
            phase.statuses[status] = phase.statuses.get(status, 0) + 1
            if close:
                writer.close()
                writer = None
    finally:
        if writer is not None:
            writer.close()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def run_phase(
    name: str, args: argparse.Namespace, make_request: Callable[[], bytes | None], close_each: bool
) -> dict[str, Any]:
    phase = Phase(args.duration, args.max_requests)
    cpu0 = proc_cpu_s(args.hub_pid)
    t0 = time.monotonic()
    await asyncio.gather(*(worker(args.port, phase, make_request, close_each) for _ in range(args.concurrency)))
    elapsed = time.monotonic() - t0
    hub_cpu = proc_cpu_s(args.hub_pid) - cpu0
    n = len(phase.latencies)
    rps = n / elapsed if elapsed > 0 else 0.0
    busy = hub_cpu / elapsed if elapsed > 0 else 0.0
    return {
        "phase": name,
        "requests": n,
        "errors": phase.errors,
        "statuses": {str(k): v for k, v in phase.statuses.items()},
        "seconds": elapsed,
        "rps": rps,
        "hub_cpu_s": hub_cpu,
        "hub_busy": busy,
        "hub_capacity_rps": rps / busy if busy > 0 else None,
        "hub_cpu_ms_per_request": 1000 * hub_cpu / n if n else None,
        "latency_ms_p50": 1000 * (percentile(phase.latencies, 0.5) or 0.0),
        "latency_ms_p99": 1000 * (percentile(phase.latencies, 0.99) or 0.0),
    }


def request(method: str, target: str, token: str, accept: str = "application/json", close: bool = False) -> bytes:
    conn = "close" if close else "keep-alive"
    return (
        f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: token {token}\r\n"
        f"Accept: {accept}\r\nConnection: {conn}\r\nContent-Length: 0\r\n\r\n"
    ).encode()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    for name in args.phases.split(","):
        if name == "version":
            req = request("GET", "/hub/api/", args.token)
            results.append(await run_phase(name, args, lambda r=req: r, False))  # type: ignore[misc]
        elif name in ("pages", "pages_close"):
            close = name == "pages_close"
            counter = iter(range(10**9))
            pages = max(1, args.users // 200)

            def page(close: bool = close, counter: Any = counter, pages: int = pages) -> bytes:
                offset = (next(counter) % pages) * 200
                target = f"/hub/api/users?state=ready&limit=200&offset={offset}"
                return request("GET", target, args.token, PAGINATION, close)

            results.append(await run_phase(name, args, page, close))
        elif name == "delete":
            names = iter(range(args.users))

            def delete(names: Any = names) -> bytes | None:
                i = next(names, None)
                if i is None:
                    return None
                return request("DELETE", f"/hub/api/users/user{i:06d}/server", args.token)

            results.append(await run_phase(name, args, delete, False))
        else:
            raise SystemExit(f"unknown phase {name!r}")
    return {"concurrency": args.concurrency, "users": args.users, "phases": results}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--hub-pid", type=int, required=True)
    p.add_argument("--users", type=int, required=True, help="population size of the hub")
    p.add_argument("--token", default="bench-token")
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--duration", type=float, default=3.0, help="seconds per phase, at most")
    p.add_argument("--max-requests", type=int, default=50_000, help="requests per phase, at most")
    p.add_argument("--phases", default="version,pages,pages_close,delete")
    args = p.parse_args()
    print(json.dumps(asyncio.run(main_async(args))))


if __name__ == "__main__":
    main()
