#!/usr/bin/env python3
"""Benchmark --inspect-kernels: 2,000 candidate servers whose kernel API answers in 50 ms, --concurrency=10.

Each scenario starts ``fakehub.py`` (the benchmark hub of ``run.py``, in its own process on 127.0.0.1) with
every server idle by the hub's data, a 50 ms stop, and single-user servers behind its fake proxy whose
``api/kernels`` answers after 50 ms. trio-culler runs once (``--once``) with ``--inspect-kernels``.

Targets (what --inspect-kernels may cost on top of the stops, and what it must never do):

- pass time, hub side (first request to last answer), within 1.2x of the bound
  ``(candidates x kernel request + stops x stop) / concurrency``;
- never more than ``--concurrency`` requests in flight, pages, kernel requests and DELETEs together (the hub
  counts them);
- correct: every idle server stopped, no server with a busy kernel stopped, one kernel request per candidate.

A third run without ``--inspect-kernels`` on the busy scenario shows what the hub's data alone does (it stops
the servers whose kernels are busy); the original jupyterhub-idle-culler has no kernel inspection, so it
behaves like that run (and, awaiting one stop after another, takes 2,000 x 50 ms = 100 s for the stops alone).

Usage: ``python benchmarks/kernels.py [--users=2000]``; exits 1 when a target is missed. Writes
``benchmarks/KERNELS.md``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import HERE, LOGS, TOKEN, FakeHub, Json, child_env, trio_culler

CONCURRENCY = 10
KERNEL_LATENCY = 0.05
STOP_LATENCY = 0.05
TARGET_RATIO = 1.2


@dataclass(frozen=True)
class Scenario:
    name: str
    busy_fraction: float
    inspect: bool


def run_scenario(scenario: Scenario, users: int) -> Json:
    LOGS.mkdir(parents=True, exist_ok=True)
    hub = FakeHub(
        [
            f"--users={users}",
            "--idle-fraction=1.0",
            "--seed=10",
            f"--stop-latency={STOP_LATENCY}",
            f"--kernel-latency={KERNEL_LATENCY}",
            f"--busy-fraction={scenario.busy_fraction}",
            f"--token={TOKEN}",
        ],
        LOGS / f"kernels-{scenario.name}.hub.log",
        lifetime=900,
    )
    try:
        culler = trio_culler()
        base = f"http://127.0.0.1:{hub.port}"
        argv = [
            *culler.argv,
            f"--url={base}/hub/api",
            "--timeout=600",
            f"--concurrency={CONCURRENCY}",
            "--once",
            "--progress-bar=false",
            "--log-level=WARNING",
        ]
        if scenario.inspect:
            argv += ["--inspect-kernels", f"--public-url={base}"]
        started = time.monotonic()
        done = subprocess.run(argv, env=child_env(culler.env), capture_output=True, text=True, timeout=900, check=False)
        wall = time.monotonic() - started
        stats = hub.stats(detail=True)
    finally:
        hub.close()
    if done.returncode != 0:
        raise SystemExit(f"culler failed ({done.returncode}):\n{done.stderr[-3000:]}")
    requests = stats["requests"]
    correctness = stats["correctness"]
    candidates = users
    stops = int(requests.get("delete_server", 0))
    kernel_requests = int(requests.get("kernels", 0))
    bound = (kernel_requests * KERNEL_LATENCY + stops * STOP_LATENCY) / CONCURRENCY
    pass_s = stats["last_response"][0] - stats["first_request"][0]
    return {
        "scenario": scenario.name,
        "inspect": scenario.inspect,
        "busy_fraction": scenario.busy_fraction,
        "candidates": candidates,
        "kernel_requests": kernel_requests,
        "terminal_requests": int(requests.get("terminals", 0)),
        "stops": stops,
        "pages": int(requests.get("list", 0)),
        "pass_s": pass_s,
        "culler_wall_s": wall,
        "bound_s": bound,
        "ratio": pass_s / bound if bound else None,
        "max_in_flight": stats["max_in_flight"],
        "idle_remaining": correctness["idle_remaining"],
        "busy_stopped": correctness["active_stopped"],
        "stopped_twice": correctness["servers_stopped_more_than_once"],
    }


def check(result: Json) -> list[str]:
    """What is wrong with an --inspect-kernels run, as messages; empty when every target is met."""
    problems = []
    if result["ratio"] is None or result["ratio"] > TARGET_RATIO:
        problems.append(f"pass {result['pass_s']:.2f}s is {result['ratio']:.3f}x the bound {result['bound_s']:.2f}s")
    if result["max_in_flight"] > CONCURRENCY:
        problems.append(f"{result['max_in_flight']} requests in flight, more than {CONCURRENCY}")
    if result["kernel_requests"] != result["candidates"]:
        problems.append(f"{result['kernel_requests']} kernel requests for {result['candidates']} candidates")
    if result["idle_remaining"] or result["busy_stopped"] or result["stopped_twice"]:
        problems.append(
            f"incorrect: {result['idle_remaining']} idle left, {result['busy_stopped']} busy stopped, "
            f"{result['stopped_twice']} stopped twice"
        )
    return problems


def render(results: list[Json], users: int) -> str:
    lines = [
        "# --inspect-kernels benchmark",
        "",
        f"`python benchmarks/kernels.py --users={users}`: {users} servers idle by the hub's data, kernel API "
        f"{KERNEL_LATENCY * 1000:.0f} ms, stop {STOP_LATENCY * 1000:.0f} ms, `--concurrency={CONCURRENCY}`. "
        "Bound: (kernel requests x 50 ms + stops x 50 ms) / 10. Pass time measured by the hub, first request to "
        "last answer.",
        "",
        "| scenario | inspect | kernel requests | stops | pass (s) | bound (s) | ratio | max in flight | "
        "idle left | busy stopped |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.3f}x"
        lines.append(
            f"| {r['scenario']} | {'yes' if r['inspect'] else 'no'} | {r['kernel_requests']} | {r['stops']} | "
            f"{r['pass_s']:.2f} | {r['bound_s']:.2f} | {ratio} | {r['max_in_flight']} | {r['idle_remaining']} | "
            f"{r['busy_stopped']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--users", type=int, default=2000)
    opts = parser.parse_args(argv)
    scenarios = [
        Scenario("all-idle", 0.0, inspect=True),
        Scenario("10%-busy", 0.1, inspect=True),
        Scenario("10%-busy-hub-only", 0.1, inspect=False),
    ]
    results = []
    failed = False
    for scenario in scenarios:
        result = run_scenario(scenario, opts.users)
        results.append(result)
        problems = check(result) if scenario.inspect else []
        failed = failed or bool(problems)
        verdict = "; ".join(problems) if problems else "ok"
        print(
            f"{scenario.name}: pass {result['pass_s']:.2f}s, bound {result['bound_s']:.2f}s "
            f"({result['ratio']:.3f}x), {result['kernel_requests']} kernel requests, {result['stops']} stops, "
            f"max in flight {result['max_in_flight']}, busy stopped {result['busy_stopped']}: "
            f"{verdict if scenario.inspect else 'reference'}",
            flush=True,
        )
    (HERE / "KERNELS.md").write_text(render(results, opts.users))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
