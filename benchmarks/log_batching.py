"""What batching the per-cull log lines saves: 20,000 cull lines written to stderr, a pipe, one write per line
(``logging.StreamHandler``) or in batches (``_logging.BatchingStreamHandler``), in a child process each.

::

    python benchmarks/log_batching.py [--lines 20000] [--repeat 5]

Prints the median CPU and wall time of each way; the figures in RESULTS.md ("Measured by hand") come from it.
The wall time includes waiting for the pipe's reader (this script, as the hub reads a managed service's stderr).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import time

from trio_culler._logging import BatchingStreamHandler, TextFormatter


def child(mode: str, lines: int) -> None:
    handler: logging.Handler = BatchingStreamHandler(sys.stderr) if mode == "batched" else logging.StreamHandler()
    handler.setFormatter(TextFormatter())
    log = logging.getLogger("trio_culler")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    logging._srcfile = None
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(lines):
        name = f"user-{i:05}"
        log.info("Culling server %s (%s)", name, "inactive for 01:02:03", extra={"action": "stop", "user": name})
    handler.flush()
    print(json.dumps({"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--child", choices=["plain", "batched"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.lines)
        return
    runs: dict[str, list[dict[str, float]]] = {"plain": [], "batched": []}
    for _ in range(args.repeat):
        for mode, found in runs.items():
            argv = [sys.executable, __file__, f"--child={mode}", f"--lines={args.lines}"]
            out = subprocess.run(argv, capture_output=True, text=True, check=True)
            found.append(json.loads(out.stdout))
    for mode, found in runs.items():
        cpu = statistics.median(run["cpu"] for run in found)
        wall = statistics.median(run["wall"] for run in found)
        print(f"{mode}: {args.lines} lines, CPU {cpu:.3f} s, wall {wall:.3f} s (median of {args.repeat})")


if __name__ == "__main__":
    main()
