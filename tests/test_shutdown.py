"""SIGTERM / SIGINT: requests in flight get ``--grace-period`` to finish, the process exits 0 within it, and a second
signal exits at once. Tested on the real command line (``python -m trio_culler``) against a FakeHub in another
process (``_hubproc.py``) whose stops are slow, in ``--once`` and in periodic mode.

Bounds are generous (these are not benchmarks): a child needs about half a second just to import.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest

from .faults_net import dead_port
from .faults_procs import ChildProcess, run_culler, run_hub

TOKEN = "shutdown-token-5be0c41d"
#: Slack on every upper bound, for a loaded CI machine.
SLACK = 5.0


@pytest.fixture(scope="module")
def slow_hub() -> Iterator[tuple[ChildProcess, str]]:
    """Stops take a minute (and are answered only then): whatever the culler sends stays in flight."""
    with run_hub(TOKEN, "--users", "400", "--stop-latency", "60", "--slow-stop-timeout", "90") as hub:
        yield hub


@pytest.fixture(scope="module")
def quick_hub() -> Iterator[tuple[ChildProcess, str]]:
    """Stops take one second: a grace period of a few seconds is enough to let them finish."""
    with run_hub(TOKEN, "--users", "200", "--stop-latency", "1.0") as hub:
        yield hub


def culling_started(hub: ChildProcess, since: int) -> None:
    """Wait until the hub has received a stop (after output position ``since``), then a little longer for the
    culler's other workers to send theirs. The hub's line is the proof: the culler's own log of a cull may be
    written a little later, in a batch."""
    hub.wait_for(lambda text: '"event": "delete"' in text, timeout=30, since=since)
    time.sleep(0.3)


def signal_and_time(culler: ChildProcess, signum: int, *, timeout: float) -> tuple[int, float]:
    """Send ``signum``; the exit status and how long the process took to exit after it."""
    sent = time.monotonic()
    culler.popen.send_signal(signum)
    status = culler.wait(timeout)
    return status, time.monotonic() - sent


def deletes_after(hub: ChildProcess, moment: float, since: int) -> list[str]:
    return [e["path"] for e in hub.events(since=since) if e["event"] == "delete" and e["t"] > moment]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_once_lets_requests_in_flight_finish_then_exits_0(quick_hub: tuple[ChildProcess, str], signum: int) -> None:
    hub, url = quick_hub
    args = [f"--url={url}", "--once", "--concurrency=4", "--grace-period=5"]
    earlier = hub.mark()  # the hub is shared by this module's tests: look at this test's events only
    with run_culler(TOKEN, *args) as culler:
        culling_started(hub, earlier)
        asked = len([event for event in hub.events(since=earlier) if event["event"] == "delete"])
        status, took = signal_and_time(culler, signum, timeout=5 + SLACK)
    assert status == 0, culler.text()
    assert took < 5, "one-second stops finish well inside the grace period"
    time.sleep(0.2)  # the hub's last lines
    events = hub.events(since=earlier)
    delete_paths = [e["path"] for e in events if e["event"] == "delete"]
    answered = [e["path"] for e in events if e["event"] == "answered"]
    assert asked >= 1
    assert sorted(answered) == sorted(delete_paths), "every stop the culler sent was answered before it exited"
    summary = culler.wait_for(lambda text: "Pass done" in text, timeout=1).text
    assert "0 errors" in summary
    # Draining: far fewer than the hub's 200 idle servers; the slack is for stops begun between counting and
    # signalling (none may begin after the signal: the next test).
    assert asked <= len(delete_paths) <= asked + 4


def test_no_new_request_starts_after_the_first_signal(quick_hub: tuple[ChildProcess, str]) -> None:
    hub, url = quick_hub
    earlier = hub.mark()
    with run_culler(TOKEN, f"--url={url}", "--once", "--concurrency=4", "--grace-period=5") as culler:
        culling_started(hub, earlier)
        sent = time.monotonic()
        status, _took = signal_and_time(culler, signal.SIGTERM, timeout=5 + SLACK)
    assert status == 0
    time.sleep(0.2)  # the hub's last lines
    assert deletes_after(hub, sent, earlier) == []


def test_once_exits_0_when_the_grace_period_runs_out(slow_hub: tuple[ChildProcess, str]) -> None:
    hub, url = slow_hub
    earlier = hub.mark()
    with run_culler(TOKEN, f"--url={url}", "--once", "--concurrency=4", "--grace-period=2") as culler:
        culling_started(hub, earlier)
        status, took = signal_and_time(culler, signal.SIGTERM, timeout=2 + SLACK)
    assert status == 0, culler.text()
    assert 1.5 <= took <= 2 + SLACK, "in-flight stops were given the grace period, and no more"
    assert "Traceback" not in culler.text()


@pytest.mark.parametrize("mode", [["--once"], []], ids=["once", "periodic"])
def test_a_second_signal_exits_at_once(slow_hub: tuple[ChildProcess, str], mode: list[str]) -> None:
    hub, url = slow_hub
    earlier = hub.mark()
    with run_culler(TOKEN, f"--url={url}", *mode, "--concurrency=4", "--grace-period=60") as culler:
        culling_started(hub, earlier)
        culler.popen.send_signal(signal.SIGTERM)
        culler.wait_for(lambda text: "finishing requests in flight" in text, timeout=10)
        time.sleep(0.5)
        assert culler.popen.poll() is None, "a 60 s grace period is still running"
        status, took = signal_and_time(culler, signal.SIGINT, timeout=3 + SLACK)
    assert status == 0, culler.text()
    assert took < 3
    assert "again: exiting now" in culler.text()
    assert "Traceback" not in culler.text()


def test_periodic_mode_exits_0_within_the_grace_period(slow_hub: tuple[ChildProcess, str]) -> None:
    hub, url = slow_hub
    earlier = hub.mark()
    with run_culler(TOKEN, f"--url={url}", "--cull-every=600", "--concurrency=4", "--grace-period=2") as culler:
        culling_started(hub, earlier)
        status, took = signal_and_time(culler, signal.SIGINT, timeout=2 + SLACK)
    assert status == 0, culler.text()
    assert 1.5 <= took <= 2 + SLACK
    assert "Traceback" not in culler.text()


def test_periodic_mode_between_passes_exits_at_once(quick_hub: tuple[ChildProcess, str]) -> None:
    _hub, url = quick_hub
    with run_culler(TOKEN, f"--url={url}", "--cull-every=600", "--dry-run", "--grace-period=30") as culler:
        culler.wait_for(lambda text: "Pass done" in text, timeout=30)
        status, took = signal_and_time(culler, signal.SIGTERM, timeout=3 + SLACK)
    assert status == 0, culler.text()
    assert took < 3, "nothing in flight: no reason to wait for the grace period"
    assert "Stopped" in culler.text()


def test_a_hub_that_is_not_there_is_waited_for_not_exited_on() -> None:
    # A managed service that exits is restarted by the hub in a loop, culling nothing: the process must keep
    # probing (and say so each time) until it is stopped.
    url = f"http://127.0.0.1:{dead_port()}/hub/api"
    with run_culler(TOKEN, f"--url={url}", "--cull-every=60", "--max-retries=0") as culler:
        culler.wait_for(lambda text: "Hub not ready" in text, timeout=30)
        time.sleep(1.5)  # long enough for the second probe (after 1 s)
        assert culler.popen.poll() is None, "still running, still waiting"
        status, took = signal_and_time(culler, signal.SIGTERM, timeout=3 + SLACK)
    output = culler.text()
    assert status == 0, output
    assert took < 3
    probes = [line for line in output.splitlines() if "Hub not ready" in line]
    assert len(probes) >= 2
    assert all(url in line and "Connection refused" in line for line in probes), probes


def test_cull_lines_reach_the_log_promptly(slow_hub: tuple[ChildProcess, str]) -> None:
    # An operator watching the log (or a hub that kills the service) must not lose sight of what was culled.
    hub, url = slow_hub
    earlier = hub.mark()
    with run_culler(TOKEN, f"--url={url}", "--once", "--concurrency=4", "--grace-period=0") as culler:
        stop = hub.wait_for(lambda text: '"event": "delete"' in text, timeout=30, since=earlier)
        logged = culler.wait_for(lambda text: "Culling server" in text, timeout=3)
        culler.popen.send_signal(signal.SIGTERM)
        culler.wait(SLACK)
    assert logged.at - stop.at < 1.5
