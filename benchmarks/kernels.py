#!/usr/bin/env python3
"""Benchmark --inspect-kernels with per-server credentials: 2,000 candidate servers whose kernel API answers in
50 ms, --concurrency=10, two passes of a long-running culler, then SIGTERM.

Each scenario starts ``fakehub.py`` (the benchmark hub of ``run.py``, in its own process on 127.0.0.1) with
every server idle by the hub's data, a 50 ms stop, and single-user servers behind its fake proxy whose
``api/kernels`` answers after 50 ms, only to a token minted for that server (the hub's own token is refused
and counted). trio-culler runs as a service (``--cull-every=60``) with ``--inspect-kernels``: for each server it
inspects it mints a token of that server's user (``POST .../tokens``), reuses it at the next pass, and revokes
it (``DELETE .../tokens/{id}``) when the server is culled or when the culler stops. Passes are counted through
the culler's ``--metrics-port``; the hub's counters are read after each pass and after the stop.

Targets (what --inspect-kernels may cost on top of the stops, and what it must never do):

- first pass, hub side (first request to last answer), within 1.2x of the bound
  ``(candidates x kernel request + stops x stop) / concurrency`` (mints and revocations add hub requests
  that answer at once, and must fit in the margin);
- never more than ``--concurrency`` requests in flight, pages, mints, kernel requests, stops and revocations
  together (the hub counts them);
- correct: every idle server stopped, no server with a busy kernel stopped, one kernel request and one mint per
  candidate in the first pass, a revocation per stop; in the second pass the spared servers are asked again
  with the tokens they have (no mint); after SIGTERM no token is left; the hub's own token never reaches a
  server.

A third run without ``--inspect-kernels`` on the busy scenario shows what the hub's data alone does (it stops
the servers whose kernels are busy); the original jupyterhub-idle-culler has no kernel inspection, so it
behaves like that run.

Usage: ``python benchmarks/kernels.py [--users=2000]``; exits 1 when a target is missed. Writes
``benchmarks/KERNELS.md``.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import signal
import socket
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
#: Long enough that the first pass (about 20 s) is over before the second starts.
CULL_EVERY = 60
#: Passes by outcome (``trio_culler_passes_total{outcome="..."}``): every outcome counts as a pass done.
_PASSES = re.compile(r"^trio_culler_passes_total(?:\{[^}]*\})? (\S+)$", re.MULTILINE)


@dataclass(frozen=True)
class Scenario:
    name: str
    busy_fraction: float
    inspect: bool


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def passes_done(port: int) -> int:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
        connection.close()
    except OSError:
        return 0
    return int(sum(float(value) for value in _PASSES.findall(text)))


def wait_for_pass(port: int, number: int, proc: subprocess.Popen[bytes], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while passes_done(port) < number:
        if proc.poll() is not None:
            raise SystemExit(f"culler exited ({proc.returncode}) before pass {number}")
        if time.monotonic() > deadline:
            raise SystemExit(f"pass {number} did not finish within {timeout:.0f} s")
        time.sleep(0.2)


def delta(after: Json, before: Json | None) -> dict[str, int]:
    """Requests by kind between two hub snapshots, with the token counters."""
    counts = {kind: int(n) for kind, n in after["requests"].items()}
    if before is not None:
        for kind, n in before["requests"].items():
            counts[kind] = counts.get(kind, 0) - int(n)
    return counts


def per_pass(requests: dict[str, int]) -> Json:
    kernels = requests.get("kernels", 0)
    mints = requests.get("mint", 0)
    return {
        "kernels": kernels,
        "mint": mints,
        "reuse": kernels - mints,  # one kernel request per inspected server without --kernel-activity-only
        "revoke": requests.get("revoke", 0),
        "stops": requests.get("delete_server", 0),
    }


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
        lifetime=1200,
    )
    metrics = free_port()
    log_path = LOGS / f"kernels-{scenario.name}.culler.log"
    try:
        culler = trio_culler()
        base = f"http://127.0.0.1:{hub.port}"
        argv = [
            *culler.argv,
            f"--url={base}/hub/api",
            "--timeout=600",
            f"--cull-every={CULL_EVERY}",
            f"--concurrency={CONCURRENCY}",
            f"--metrics-port={metrics}",
            "--log-level=WARNING",
        ]
        if scenario.inspect:
            argv += ["--inspect-kernels", f"--public-url={base}"]
        with log_path.open("wb") as log:
            proc = subprocess.Popen(argv, env=child_env(culler.env), stdout=log, stderr=subprocess.STDOUT)
            try:
                wait_for_pass(metrics, 1, proc)
                first = hub.stats(detail=True)
                wait_for_pass(metrics, 2, proc)
                second = hub.stats()
                proc.send_signal(signal.SIGTERM)
                returncode = proc.wait(timeout=120)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        stopped = hub.stats()
    finally:
        hub.close()
    if returncode != 0:
        raise SystemExit(f"culler failed ({returncode}); see {log_path}")
    requests = first["requests"]
    correctness = first["correctness"]
    stops = int(requests.get("delete_server", 0))
    kernel_requests = int(requests.get("kernels", 0))
    # Each inspection also reads the server's own api/status (its last activity), which answers as slowly.
    status_requests = int(requests.get("status", 0))
    bound = ((kernel_requests + status_requests) * KERNEL_LATENCY + stops * STOP_LATENCY) / CONCURRENCY
    pass_s = first["last_response"][0] - first["first_request"][0]
    return {
        "scenario": scenario.name,
        "inspect": scenario.inspect,
        "busy_fraction": scenario.busy_fraction,
        "candidates": users,
        "busy": round(scenario.busy_fraction * users),
        "kernel_requests": kernel_requests,
        "status_requests": status_requests,
        "stops": stops,
        "pages": int(requests.get("list", 0)),
        "pass_s": pass_s,
        "bound_s": bound,
        "ratio": pass_s / bound if bound else None,
        "max_in_flight": max(first["max_in_flight"], second["max_in_flight"]),
        "idle_remaining": correctness["idle_remaining"],
        "busy_stopped": correctness["active_stopped"],
        "stopped_twice": correctness["servers_stopped_more_than_once"],
        "pass1": per_pass(delta(first, None)),
        "pass2": per_pass(delta(second, first)),
        "stop": per_pass(delta(stopped, second)),
        "tokens_left": stopped["tokens"]["live"],
        "hub_token_at_servers": stopped["tokens"]["hub_token_at_servers"],
    }


def check(result: Json) -> list[str]:
    """What is wrong with an --inspect-kernels run, as messages; empty when every target is met."""
    problems = []
    if result["ratio"] is None or result["ratio"] > TARGET_RATIO:
        problems.append(f"pass {result['pass_s']:.2f}s is {result['ratio']:.3f}x the bound {result['bound_s']:.2f}s")
    if result["max_in_flight"] > CONCURRENCY:
        problems.append(f"{result['max_in_flight']} requests in flight, more than {CONCURRENCY}")
    first, second, stop = result["pass1"], result["pass2"], result["stop"]
    if first["kernels"] != result["candidates"] or first["mint"] != result["candidates"]:
        problems.append(
            f"first pass: {first['kernels']} kernel requests, {first['mint']} mints for {result['candidates']} "
            "candidates"
        )
    if first["revoke"] != first["stops"]:
        problems.append(f"first pass: {first['revoke']} revocations for {first['stops']} stops")
    if (second["mint"], second["reuse"]) != (0, result["busy"]):
        problems.append(f"second pass: {second['mint']} mints, {second['reuse']} reused for {result['busy']} spared")
    if stop["revoke"] != result["busy"] or result["tokens_left"]:
        problems.append(f"stop: {stop['revoke']} revoked, {result['tokens_left']} tokens left")
    if result["hub_token_at_servers"]:
        problems.append(f"the hub's own token reached servers {result['hub_token_at_servers']} times")
    if result["idle_remaining"] or result["busy_stopped"] or result["stopped_twice"]:
        problems.append(
            f"incorrect: {result['idle_remaining']} idle left, {result['busy_stopped']} busy stopped, "
            f"{result['stopped_twice']} stopped twice"
        )
    return problems


def render(results: list[Json], users: int, load: str) -> str:
    lines = [
        "# --inspect-kernels benchmark",
        "",
        f"`python benchmarks/kernels.py --users={users}`: {users} servers idle by the hub's data, kernel API "
        f"{KERNEL_LATENCY * 1000:.0f} ms, stop {STOP_LATENCY * 1000:.0f} ms, `--concurrency={CONCURRENCY}`, a "
        f"long-running culler (`--cull-every={CULL_EVERY}`) stopped with SIGTERM after its second pass. Each "
        "inspected server is asked with a token minted for it (the hub's own token is refused by the servers). "
        "Bound: ((kernel + status requests) x 50 ms + stops x 50 ms) / 10 (each inspection reads the server's "
        "api/status too, for its own last activity). First-pass time measured by the hub, first "
        f"request to last answer. Load average when run: {load}.",
        "",
        "| scenario | inspect | kernel requests | status requests | stops | pass (s) | bound (s) | ratio | "
        "max in flight | idle left | busy stopped |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.3f}x"
        lines.append(
            f"| {r['scenario']} | {'yes' if r['inspect'] else 'no'} | {r['kernel_requests']} | "
            f"{r['status_requests']} | {r['stops']} | "
            f"{r['pass_s']:.2f} | {r['bound_s']:.2f} | {ratio} | {r['max_in_flight']} | {r['idle_remaining']} | "
            f"{r['busy_stopped']} |"
        )
    lines += [
        "",
        "Requests for per-server tokens (reuse: servers asked with a token they already had, no request):",
        "",
        "| scenario | pass 1: mint / reuse / revoke | pass 2: mint / reuse / revoke | SIGTERM: revoke | tokens left | "
        "hub token at servers |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        one, two = r["pass1"], r["pass2"]
        lines.append(
            f"| {r['scenario']} | {one['mint']} / {one['reuse']} / {one['revoke']} | "
            f"{two['mint']} / {two['reuse']} / {two['revoke']} | {r['stop']['revoke']} | {r['tokens_left']} | "
            f"{r['hub_token_at_servers']} |"
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
    load = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    for scenario in scenarios:
        result = run_scenario(scenario, opts.users)
        results.append(result)
        problems = check(result) if scenario.inspect else []
        failed = failed or bool(problems)
        verdict = "; ".join(problems) if problems else "ok"
        one, two = result["pass1"], result["pass2"]
        print(
            f"{scenario.name}: pass {result['pass_s']:.2f}s, bound {result['bound_s']:.2f}s "
            f"({result['ratio']:.3f}x), {result['kernel_requests']} kernel requests, {result['stops']} stops, "
            f"max in flight {result['max_in_flight']}, busy stopped {result['busy_stopped']}; tokens: pass 1 "
            f"{one['mint']} minted, {one['revoke']} revoked; pass 2 {two['mint']} minted, {two['reuse']} reused; "
            f"stop {result['stop']['revoke']} revoked, {result['tokens_left']} left: "
            f"{verdict if scenario.inspect else 'reference'}",
            flush=True,
        )
    load += " -> {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    (HERE / "KERNELS.md").write_text(render(results, opts.users, load))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
