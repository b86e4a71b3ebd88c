#!/usr/bin/env python3
"""CPU per DELETE of the HTTP clients the culler could use, against the benchmark hub (fakehub.py).

Each client, in a process of its own, stops the idle servers of a fresh hub (``--users``, all idle, instant
stops) through ``HubClient.stop_server`` with ``--concurrency`` requests in flight, and the process's CPU time
(user + sys, from ``resource.getrusage``) is divided by the number of DELETEs. The clients:

- ``h11``: trio-culler's default, ``httpx.AsyncClient`` over ``_transport.TrioH11Transport`` (h11 on trio
  streams);
- ``httpx``: the same HubClient over ``httpx.AsyncClient`` and httpx's default transport, httpcore (what
  ``--use-proxy-env`` uses).

Only the client's process is measured, not the hub's. Usage::

    python benchmarks/request_cost.py [--users 5000] [--concurrency 10] [--repeat 3]

It prints one line per client with the median µs of CPU per DELETE and the ratio to ``h11``, and with
``--json`` the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from run import WORK, FakeHub

HERE = Path(__file__).resolve().parent
TOKEN = "bench-token-request-cost-0123456789"
CLIENTS = ("h11", "httpx")


def start_hub(users: int) -> FakeHub:
    """A fresh benchmark hub whose servers are all idle (run.py's FakeHub: it also waits for the port)."""
    hub_args = ["--idle-fraction=1.0", f"--users={users}", "--seed=7", f"--token={TOKEN}"]
    return FakeHub(hub_args, WORK / "request_cost.hub.log", lifetime=600)


def run_client(client: str, port: int, users: int, concurrency: int) -> dict[str, Any]:
    """Run one client in a fresh interpreter (imports and caches not shared between clients)."""
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            client,
            f"--port={port}",
            f"--users={users}",
            f"--concurrency={concurrency}",
        ],
        capture_output=True,
        check=True,
        env=env,
        timeout=600,
    )
    return dict(json.loads(out.stdout))


def child(client: str, port: int, users: int, concurrency: int) -> dict[str, Any]:
    import trio

    from trio_culler import Config
    from trio_culler._hub import open_hub_client

    config = Config(
        url=f"http://127.0.0.1:{port}/hub/api",
        api_token=TOKEN,
        concurrency=concurrency,
        use_proxy_env=client == "httpx",
    )
    outcomes: list[int] = []

    async def main() -> tuple[float, float]:
        async with open_hub_client(config) as hub:
            await hub.get_info()  # connect and warm up before measuring
            names: list[str] = []
            while len(names) < users:
                page = await hub.list_users(state="ready", offset=len(names), limit=200)
                if not page.users:
                    break
                names.extend(user.name for user in page.users)

            async def worker(mine: list[str]) -> None:
                for name in mine:
                    outcomes.append(await hub.stop_server(name, ""))

            before = resource.getrusage(resource.RUSAGE_SELF)
            wall = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for k in range(concurrency):
                    nursery.start_soon(worker, names[k::concurrency])
            wall = time.perf_counter() - wall
            after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return cpu, wall

    cpu, wall = trio.run(main)
    stopped = sum(1 for status in outcomes if status in (200, 204))
    return {"client": client, "requests": len(outcomes), "stopped": stopped, "cpu_s": cpu, "wall_s": wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--users", type=int, default=5000, help="DELETEs per client and run")
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", action="store_true")
    p.add_argument("--child", choices=CLIENTS, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.port, args.users, args.concurrency)))
        return
    runs: dict[str, list[dict[str, Any]]] = {client: [] for client in CLIENTS}
    for _ in range(args.repeat):
        for client in CLIENTS:  # interleaved, so that a noisy moment hurts both
            hub = start_hub(args.users)
            try:
                result = run_client(client, hub.port, args.users, args.concurrency)
            finally:
                hub.close()
            if result["stopped"] != args.users:
                raise SystemExit(f"{client}: stopped {result['stopped']} of {args.users} servers")
            runs[client].append(result)
    per_request = {
        client: statistics.median(r["cpu_s"] / r["requests"] for r in results) * 1e6 for client, results in runs.items()
    }
    if args.json:
        print(json.dumps({"us_cpu_per_delete": per_request, "runs": runs}, indent=2))
        return
    base = per_request["h11"]
    for client, us in per_request.items():
        print(f"{client:6s} {us:7.1f} µs CPU per DELETE  ({us / base:.2f}x h11)  median of {args.repeat}")


if __name__ == "__main__":
    main()
