"""The child process of ``test_hostile_servers``: one inspection of one server, measured.

``python -m tests.hostile_inspection <server URL> <request timeout> [kernels|notice]`` inspects the server at
``<server URL>/user/mallory/`` the way a pass does (``_engine.inspect_through``: the request engine, then
``_inspect``'s reading), or with ``notice`` reads its notice state as a pass does before a cull
(``_notice.NoticeClient.read_keep``: the request engine, then ``parse_state``), and prints one JSON object: how
it ended, the longest trio task step and the longest gap between a 10 ms heartbeat's wake-ups (both the event
loop's worst stall), the RSS before the request and the process's peak RSS, in MiB. A process of its own, so
that the peak is this request's alone.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, cast

import trio

from trio_culler import Config, Server
from trio_culler._engine import inspect_through
from trio_culler._hub import open_hub_client
from trio_culler._inspect import InspectionFailed
from trio_culler._notice import NoticeClient, NoticeFailed

HEARTBEAT = 0.01


class LongestStep(trio.abc.Instrument):
    def __init__(self) -> None:
        self.longest = 0.0
        self._started: float | None = None

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._started = time.perf_counter()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        # None: the step that added this instrument, which began before it could be timed.
        if self._started is not None:
            self.longest = max(self.longest, time.perf_counter() - self._started)
        self._started = None


def rss_mib(field: str = "VmRSS") -> float:
    """The process's RSS now (``VmRSS``) or its peak (``VmHWM``), in MiB. Not ``getrusage``'s ``ru_maxrss``: on
    Linux that keeps the peak of the process image before ``exec``, i.e. of the parent that forked it."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


class OwnToken:
    """The per-server credentials of a notice client that talks to one server: mallory's own token."""

    async def for_server(self, user: str, server: str) -> str:
        return "mallory-own-token"


async def main(server_url: str, request_timeout: float, what: str = "kernels") -> dict[str, object]:
    config = Config(
        api_token="hostile-test-token-0123456789",
        url="http://127.0.0.1:9/hub/api",  # never asked: an inspection talks to the server alone
        timeout=3600,
        inspect_kernels=True,
        kernel_activity_only=True,
        public_url=server_url,
        request_timeout=request_timeout,
        max_retries=0,
    )
    server = Server(url="/user/mallory/", ready=True, model={"url": "/user/mallory/"})
    longest_gap = 0.0
    instrument = LongestStep()
    async with open_hub_client(config) as hub, trio.open_nursery() as nursery:

        async def heartbeat() -> None:
            nonlocal longest_gap
            last = time.perf_counter()
            while True:
                await trio.sleep(HEARTBEAT)
                now = time.perf_counter()
                longest_gap = max(longest_gap, now - last - HEARTBEAT)
                last = now

        nursery.start_soon(heartbeat)
        await trio.sleep(0.05)  # the heartbeat is running, the imports and the client settled
        before = rss_mib()
        peak_before = rss_mib("VmHWM")
        trio.lowlevel.add_instrument(instrument)
        started = time.perf_counter()
        try:
            if what == "notice":
                await NoticeClient(hub, config, cast(Any, OwnToken())).read_keep("mallory", server)
            else:
                await inspect_through(hub, server, config, token="mallory-own-token")
            outcome = "read"
        except (InspectionFailed, NoticeFailed) as failed:
            outcome = failed.kind
        seconds = time.perf_counter() - started
        # The step that ended the inspection ends at a checkpoint, and the heartbeat wakes up once more: both
        # see a stall in that last step too.
        await trio.sleep(2 * HEARTBEAT)
        trio.lowlevel.remove_instrument(instrument)
        nursery.cancel_scope.cancel()
    peak = rss_mib("VmHWM")
    return {
        "outcome": outcome,
        "seconds": seconds,
        "longest_step": instrument.longest,
        "longest_heartbeat_gap": longest_gap,
        "rss_before_mib": before,
        "rss_peak_before_mib": peak_before,
        "rss_peak_mib": peak,
    }


if __name__ == "__main__":
    what = sys.argv[3] if len(sys.argv) > 3 else "kernels"
    print(json.dumps(trio.run(main, sys.argv[1], float(sys.argv[2]), what)))
