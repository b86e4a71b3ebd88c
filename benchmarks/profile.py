#!/usr/bin/env python3
"""Where trio-culler's CPU goes in one pass over a large hub, part by part of the hot path.

It starts ``fakehub.py`` (``--users``, 20% idle, page 200, instant stops) and runs one ``--once`` pass of the real
command line against it, in a child process whose synchronous hot-path functions are wrapped to add up the CPU
time (``time.process_time``) spent inside them:

- start-up: everything before ``trio.run`` (interpreter, imports, options, logging set-up);
- JSON decoding: ``json.loads`` of every answer;
- model structuring: ``structure_user`` (cattrs, strict types, timestamps) of every listed user;
- decisions: ``decide_server`` / ``decide_user`` (each server once, by the judge: in the pager's triage, or in a
  worker when a ``cull_arbiter_hook`` must be awaited or the server inspected);
- logging: ``Logger._log``, i.e. making, formatting, redacting and writing each record.

What remains of the process's CPU (user + sys, from ``getrusage``) is the HTTP client (encoding, parsing, system
calls), trio (scheduling, channels, I/O readiness) and the pager and engine themselves: those interleave across
``await``, which a wrapper cannot time. Each wrapper's own cost is measured first and subtracted. Nothing to
install; ``PROFILE.md`` is written beside this file. Usage::

    python benchmarks/profile.py [--users 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from run import WORK, FakeHub

HERE = Path(__file__).resolve().parent
TOKEN = "bench-token-profile-0123456789abcdef"
PARTS = ("start-up", "JSON decoding", "model structuring", "decisions", "logging")


def child(port: int, out: Path) -> None:
    """Run the culler's command line with the hot-path functions wrapped; write the sums to ``out``."""
    import logging

    import trio

    import trio_culler._http as http
    import trio_culler._hub as hub
    import trio_culler._judge as judge
    import trio_culler._work as work
    import trio_culler.cli as cli

    spent = dict.fromkeys(PARTS, 0.0)
    calls = dict.fromkeys(PARTS, 0)
    clock = time.process_time

    def timed(part: str, func: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = clock()
            try:
                return func(*args, **kwargs)
            finally:
                spent[part] += clock() - started
                calls[part] += 1

        return wrapper

    # The cost of a wrapper around nothing, to subtract per call.
    empty = timed("start-up", lambda: None)
    started = clock()
    for _ in range(100_000):
        empty()
    overhead = (clock() - started) / 100_000
    spent["start-up"] = 0.0
    calls["start-up"] = 0

    class _Json:
        loads = staticmethod(timed("JSON decoding", json.loads))

    # Replaced where the culler looks them up (mypy cannot see through setattr, which is the point here).
    setattr(http, "json", _Json)  # noqa: B010 - the request engine decodes every answer
    setattr(hub, "structure_user", timed("model structuring", getattr(hub, "structure_user")))  # noqa: B009, B010
    # As the judge (servers) and the workers (users) imported them.
    for module, name in ((judge, "decide_server"), (work, "decide_user")):
        setattr(module, name, timed("decisions", getattr(module, name)))
    logging.Logger._log = timed("logging", logging.Logger._log)  # type: ignore[method-assign]
    real_run = trio.run

    def run(*args: Any, **kwargs: Any) -> Any:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        spent["start-up"] = usage.ru_utime + usage.ru_stime
        return real_run(*args, **kwargs)

    cli.trio.run = run  # type: ignore[attr-defined]
    argv = [
        f"--url=http://127.0.0.1:{port}/hub/api",
        "--timeout=600",
        "--concurrency=10",
        "--api-page-size=200",
        "--once",
    ]
    status = cli.run(argv, {**os.environ, "JUPYTERHUB_API_TOKEN": TOKEN})
    usage = resource.getrusage(resource.RUSAGE_SELF)
    for part in PARTS[1:]:
        spent[part] -= calls[part] * overhead
    out.write_text(
        json.dumps(
            {
                "status": status,
                "user_s": usage.ru_utime,
                "sys_s": usage.ru_stime,
                "spent_s": spent,
                "calls": calls,
                "wrapper_overhead_us": overhead * 1e6,
            }
        )
    )


def one_run(users: int) -> dict[str, Any]:
    hub_args = ["--idle-fraction=0.2", f"--users={users}", "--seed=1", "--page-max=200", f"--token={TOKEN}"]
    hub = FakeHub(hub_args, WORK / "profile.hub.log", lifetime=900)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "profile.json"
        try:
            run = subprocess.run(
                [sys.executable, __file__, "--child", str(out), f"--port={hub.port}"],
                env={**os.environ, "PYTHONPATH": str(HERE.parent)},
                capture_output=True,
                text=True,
                timeout=900,
            )
        finally:
            hub.close()
        if run.returncode != 0 or not out.exists():
            raise SystemExit(f"the culler failed ({run.returncode}):\n{run.stderr[-2000:]}")
        result: dict[str, Any] = json.loads(out.read_text())
    result["summary"] = next((line for line in run.stderr.splitlines() if "Pass done" in line), "")
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=3, help="runs; medians reported")
    p.add_argument("--out", type=Path, default=HERE / "PROFILE.md")
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.port, args.child)
        return
    runs = [one_run(args.users) for _ in range(args.repeat)]
    if any(r["status"] != 0 for r in runs):
        raise SystemExit(f"a pass did not succeed: {[r['status'] for r in runs]}")
    # The wrappers' own cost is taken out of the total too, or it would land in "the rest".
    total = statistics.median(
        r["user_s"] + r["sys_s"] - sum(r["calls"][part] for part in PARTS[1:]) * r["wrapper_overhead_us"] / 1e6
        for r in runs
    )
    shares = {part: statistics.median(r["spent_s"][part] for r in runs) for part in PARTS}
    rest = total - sum(shares.values())
    calls = runs[0]["calls"]
    lines = [
        "# Where trio-culler's CPU goes\n",
        f"Generated by `python benchmarks/profile.py --users {args.users} --repeat {args.repeat}` on "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}: one `--once` pass of the command line over `fakehub.py` with "
        f"{args.users:,} users, 20% idle, page 200, instant stops, `--concurrency=10`; medians of {args.repeat} runs. "
        "How each part is measured: see the script's docstring.\n",
        f"The pass: `{runs[0]['summary'].split('] ', 1)[-1]}`\n",
        "| part | CPU, s | share | calls |",
        "|---|---|---|---|",
    ]
    for part in PARTS:
        count = "" if part == "start-up" else f"{calls[part]:,}"
        lines.append(f"| {part} | {shares[part]:.2f} | {shares[part] / total:.0%} | {count} |")
    lines += [
        f"| HTTP client, trio, pager and engine (the rest, kernel time included) | {rest:.2f} | {rest / total:.0%} | |",
        f"| **total (user + sys)** | **{total:.2f}** | 100% | |",
        "",
        f"Each wrapper's own cost ({runs[0]['wrapper_overhead_us']:.2f} µs per call, measured in the same process) is "
        "taken out of its part and of the total.",
    ]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
