"""How fast can a server be stopped and started again on a real hub? The floor under the culler's re-read bound.

A cull judged on a listing can hit a server restarted since (the restart race). The culler reads the user again
before a DELETE when the listing is older than ``_work.RECHECK_AFTER``; below that it trusts the listing, which
is safe only if no stop-and-start fits in the window. This script times, on the integration-test JupyterHub
(configurable-http-proxy on 127.0.0.1), the shortest cycle an API client can drive as fast as the hub allows:
``DELETE .../server`` until stopped, then ``POST .../server`` until the hub lists the server ready again, for a
server with no process behind it (the hub's own bookkeeping only: the floor) and for a real jupyter_server.

    python benchmarks/restart_cycle.py [--cycles 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.hubtools import HubAPI, missing_tools, start_hub, stop_hub


def cycle(api: HubAPI, name: str) -> float:
    """One stop-and-start, in seconds, from the DELETE to the server listed as ready again."""
    start = time.monotonic()
    api._check(api.client.delete(api.server_path(name)), 202, 204)
    while api.server_state(name) not in ("stopped", "absent"):
        time.sleep(0.005)
    api._check(api.client.post(api.server_path(name)), 201, 202)
    while api.server_state(name) != "running":
        time.sleep(0.005)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=5)
    args = parser.parse_args()
    problem = missing_tools()
    if problem:
        sys.exit(f"cannot run: {problem}")
    with tempfile.TemporaryDirectory() as workdir:
        hub = start_hub(Path(workdir))
        try:
            with HubAPI(hub) as api:
                for name in ("bookkeeping", "real-server"):
                    api.create_user(name)
                    api._check(api.client.post(api.server_path(name)), 201, 202)
                    while api.server_state(name) != "running":
                        time.sleep(0.05)
                    times = [cycle(api, name) for _ in range(args.cycles)]
                    print(
                        f"{name}: fastest {min(times):.3f} s, median {statistics.median(times):.3f} s "
                        f"over {len(times)} stop-and-start cycles"
                    )
                api.cleanup()
        finally:
            stop_hub(hub)


if __name__ == "__main__":
    main()
