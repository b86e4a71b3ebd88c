"""SIGTERM / SIGINT: requests in flight get ``--grace-period`` to finish, the process exits 0 within it, and a second
signal exits at once. Tested on the real command line (``python -m trio_culler``) against a FakeHub in another
process (``tests/support/hubproc.py``) whose stops are slow, in ``--once`` and in periodic mode.

Bounds are generous (these are not benchmarks): a child needs about half a second just to import. What a test
checks did not happen, it checks once an event proves it would have happened by then (the hub's own count of
DELETEs, a later line of the culler's log), never after a sleep.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest

from .support.net import dead_port
from .support.processes import ChildProcess, HubProcess, running_culler, running_hub

TOKEN = "shutdown-token-5be0c41d"
#: Slack on every upper bound, for a loaded CI machine.
SLACK = 5.0
#: The culler's --concurrency in these tests: the number of stops it has in flight once culling started.
CONCURRENCY = 4


@pytest.fixture(scope="module")
def slow_hub() -> Iterator[HubProcess]:
    """Stops take a minute (and are answered only then): whatever the culler sends stays in flight."""
    with running_hub(users=400, stop_latency=60, slow_stop_timeout=90, token=TOKEN) as hub:
        yield hub


@pytest.fixture(scope="module")
def quick_hub() -> Iterator[HubProcess]:
    """Stops take one second: a grace period of a few seconds is enough to let them finish."""
    with running_hub(users=200, stop_latency=1.0, token=TOKEN) as hub:
        yield hub


def culler(url: str, *args: str) -> AbstractContextManager[ChildProcess]:
    return running_culler(f"--url={url}", f"--concurrency={CONCURRENCY}", *args, token=TOKEN)


def deletes(hub: HubProcess, since: int) -> list[dict[str, Any]]:
    return [event for event in hub.process.events(since=since) if event["event"] == "delete"]


def culling_started(hub: HubProcess, since: int) -> None:
    """Wait until the hub has received a stop from each of the culler's workers (after output position
    ``since``). The hub's lines are the proof: the culler's own log of a cull may be written later, in a batch."""
    hub.process.wait_until(lambda: len(deletes(hub, since)) >= CONCURRENCY)


def settled(hub: HubProcess) -> None:
    """Wait until this test has read every DELETE the hub counted, and its answer: after the culler exited,
    nothing it sent is still on its way to the test (the hub prints each DELETE before it counts it)."""
    deadline = time.monotonic() + 30
    while True:
        events = hub.process.events()
        printed = [e["path"] for e in events if e["event"] == "delete"]
        answered = [e["path"] for e in events if e["event"] == "answered"]
        if len(printed) >= hub.stats()["deletes"] and sorted(answered) == sorted(printed):
            return
        assert time.monotonic() < deadline, "the hub's lines never caught up with its counters"
        time.sleep(0.05)  # a poll of the hub's counters, not a wait for something not to happen


def signal_and_time(process: ChildProcess, signum: int, *, timeout: float) -> tuple[int, float]:
    """Send ``signum``; the exit status and how long the process took to exit after it."""
    sent = time.monotonic()
    process.popen.send_signal(signum)
    status = process.wait(timeout)
    return status, time.monotonic() - sent


def deletes_after(hub: HubProcess, moment: float, since: int) -> list[str]:
    return [e["path"] for e in deletes(hub, since) if e["t"] > moment]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_once_lets_requests_in_flight_finish_then_exits_0(quick_hub: HubProcess, signum: int) -> None:
    hub = quick_hub
    earlier = hub.process.mark()  # the hub is shared by this module's tests: look at this test's events only
    with culler(hub.url, "--once", "--grace-period=5") as process:
        culling_started(hub, earlier)
        asked = len(deletes(hub, earlier))
        status, took = signal_and_time(process, signum, timeout=5 + SLACK)
    assert status == 0, process.text()
    assert took < 5, "one-second stops finish well inside the grace period"
    settled(hub)
    events = hub.process.events(since=earlier)
    delete_paths = [e["path"] for e in events if e["event"] == "delete"]
    answered = [e["path"] for e in events if e["event"] == "answered"]
    assert asked >= CONCURRENCY
    assert sorted(answered) == sorted(delete_paths), "every stop the culler sent was answered before it exited"
    summary = process.wait_for(lambda text: "Pass done" in text, timeout=1).text
    assert "0 errors" in summary
    # Draining: far fewer than the hub's 200 idle servers; the slack is for stops begun between counting and
    # signalling (none may begin after the signal: the next test).
    assert asked <= len(delete_paths) <= asked + CONCURRENCY


def test_no_new_request_starts_after_the_first_signal(quick_hub: HubProcess) -> None:
    hub = quick_hub
    earlier = hub.process.mark()
    with culler(hub.url, "--once", "--grace-period=5") as process:
        culling_started(hub, earlier)
        sent = time.monotonic()
        status, _took = signal_and_time(process, signal.SIGTERM, timeout=5 + SLACK)
    assert status == 0
    settled(hub)
    assert deletes_after(hub, sent, earlier) == []


@pytest.mark.parametrize(
    ("mode", "signum"),
    [(["--once"], signal.SIGTERM), (["--cull-every=600"], signal.SIGINT)],
    ids=["once, SIGTERM", "periodic, SIGINT"],
)
def test_exits_0_when_the_grace_period_runs_out(slow_hub: HubProcess, mode: list[str], signum: int) -> None:
    hub = slow_hub
    earlier = hub.process.mark()
    with culler(hub.url, *mode, "--grace-period=2") as process:
        culling_started(hub, earlier)
        status, took = signal_and_time(process, signum, timeout=2 + SLACK)
    assert status == 0, process.text()
    assert 1.5 <= took <= 2 + SLACK, "in-flight stops were given the grace period, and no more"
    assert "Traceback" not in process.text()


@pytest.mark.parametrize("mode", [["--once"], []], ids=["once", "periodic"])
def test_a_second_signal_exits_at_once(slow_hub: HubProcess, mode: list[str]) -> None:
    hub = slow_hub
    earlier = hub.process.mark()
    with culler(hub.url, *mode, "--grace-period=60", "--progress-interval=0.2") as process:
        culling_started(hub, earlier)
        process.popen.send_signal(signal.SIGTERM)
        draining = process.wait_for(lambda text: "finishing requests in flight" in text, timeout=10)
        # A progress line written after it: the pass still runs, within its 60 s grace period.
        process.wait_for(lambda text: "Pass in progress" in text, timeout=10, since=process.lines.index(draining))
        assert process.popen.poll() is None
        status, took = signal_and_time(process, signal.SIGINT, timeout=3 + SLACK)
    assert status == 0, process.text()
    assert took < 3
    assert "again: exiting now" in process.text()
    assert "Traceback" not in process.text()


def test_periodic_mode_between_passes_exits_at_once(quick_hub: HubProcess) -> None:
    with culler(quick_hub.url, "--cull-every=600", "--dry-run", "--grace-period=30") as process:
        process.wait_for(lambda text: "Pass done" in text, timeout=30)
        status, took = signal_and_time(process, signal.SIGTERM, timeout=3 + SLACK)
    assert status == 0, process.text()
    assert took < 3, "nothing in flight: no reason to wait for the grace period"
    assert "Stopped" in process.text()


def test_a_hub_that_is_not_there_is_waited_for_not_exited_on() -> None:
    # A managed service that exits is restarted by the hub in a loop, culling nothing: the process must keep
    # probing (and say so each time) until it is stopped.
    url = f"http://127.0.0.1:{dead_port()}/hub/api"
    with culler(url, "--cull-every=60", "--max-retries=0") as process:
        process.wait_until(lambda: process.text().count("Hub not ready") >= 2)
        assert process.popen.poll() is None, "still running, still waiting, after its second probe"
        status, took = signal_and_time(process, signal.SIGTERM, timeout=3 + SLACK)
    output = process.text()
    assert status == 0, output
    assert took < 3
    probes = [line for line in output.splitlines() if "Hub not ready" in line]
    assert len(probes) >= 2
    assert all(url in line and "Connection refused" in line for line in probes), probes


def test_cull_lines_reach_the_log_promptly(slow_hub: HubProcess) -> None:
    # An operator watching the log (or a hub that kills the service) must not lose sight of what was culled.
    hub = slow_hub
    earlier = hub.process.mark()
    with culler(hub.url, "--once", "--grace-period=0") as process:
        stop = hub.process.wait_for(lambda text: '"event": "delete"' in text, timeout=30, since=earlier)
        logged = process.wait_for(lambda text: "Culling server" in text, timeout=3)
        process.popen.send_signal(signal.SIGTERM)
        process.wait(SLACK)
    assert logged.at - stop.at < 1.5
