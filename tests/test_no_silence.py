"""No silent failures: a culler that cannot cull says so at once, in one line, and its metrics say it from a
cold start. On trio's autojump clock, against the simulated hub."""

from __future__ import annotations

import errno
import itertools
import logging
import re
import socket
from datetime import UTC, datetime
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from trio_culler import Config, PassReport, run_pass
from trio_culler._errors import HubError
from trio_culler._metrics import CULL_REASONS, ERROR_KINDS, Metrics
from trio_culler._report import PassRecorder
from trio_culler._service import Culler
from trio_culler._time import iso_utc
from trio_culler.testing import FakeHub

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TOKEN = "silence-test-token"
URL = "http://127.0.0.1:8081/hub/api"


def config(**changes: Any) -> Config:
    return attrs.evolve(Config(api_token=TOKEN, url=URL, timeout=600), **changes)


class Timeline(logging.Handler):
    """Every culler log record with the trio time it was emitted at."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[tuple[float, logging.LogRecord]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((trio.current_time(), record))

    def lines(self, needle: str, level: int = logging.DEBUG) -> list[tuple[float, str]]:
        return [(t, r.getMessage()) for t, r in self.records if r.levelno >= level and needle in r.getMessage()]


@pytest.fixture
def timeline() -> Any:
    handler = Timeline()
    logger = logging.getLogger("trio_culler")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def every_metric(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client import generate_latest

    text = generate_latest(metrics.registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


# -- a hub down from start-up ------------------------------------------------------------------------------


async def test_a_hub_down_at_start_is_warned_about_at_once_and_the_retry_delays_are_true(
    autojump_clock: trio.testing.MockClock, timeline: Timeline
) -> None:
    hub = FakeHub(token=TOKEN)
    attempts: list[float] = []
    start = trio.current_time()

    async def refuse(request: httpx.Request) -> httpx.Response | None:
        attempts.append(trio.current_time())
        if trio.current_time() < start + 100:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        return None

    hub.fault = refuse
    metrics = Metrics()
    culler = Culler(
        config(cull_every=600),
        transport=hub.transport(),
        reporters=[metrics.observe],
        probe_listeners=[metrics.observe_probe],
    )
    async with hub.running(), trio.open_nursery() as nursery:
        nursery.start_soon(culler.serve)
        await trio.sleep(50)
        down = every_metric(metrics)
        await trio.sleep(100)
        up = every_metric(metrics)
        culler.stop(grace=0)
    warnings = timeline.lines("Hub not ready at", logging.WARNING)
    first_at, first = warnings[0]
    assert first_at == start, "the first failed attempt is reported at once, not after retries"
    assert "Connection refused" in first
    assert URL in first
    assert all(
        record.levelno == logging.WARNING for _t, record in timeline.records if "Hub not ready" in record.getMessage()
    )
    announced = [float(re.search(r"retrying in ([\d.]+) s$", text).group(1)) for _t, text in warnings]  # type: ignore[union-attr]
    failed = [t for t in attempts if t < start + 100]
    gaps = [later - earlier for earlier, later in itertools.pairwise(failed)]
    assert gaps == announced[: len(gaps)], "each 'retrying in N s' is the wait that follows"
    assert announced[:5] == [1, 2, 4, 8, 16]
    # Metrics: a hub down from the start is an error and a 0 gauge; then up.
    assert down[("trio_culler_errors_total", (("kind", "unavailable"),))] == len([t for t in failed if t < start + 50])
    assert down[("trio_culler_hub_up", ())] == 0
    assert up[("trio_culler_hub_up", ())] == 1
    answered = timeline.lines("answered at")
    assert len(answered) == 1
    assert answered[0][0] >= start + 100


async def test_stop_while_waiting_for_the_hub_returns_at_once(autojump_clock: trio.testing.MockClock) -> None:
    hub = FakeHub(token=TOKEN)

    async def hang(request: httpx.Request) -> httpx.Response | None:
        await trio.sleep_forever()
        raise AssertionError  # pragma: no cover

    hub.fault = hang
    culler = Culler(config(), transport=hub.transport())
    async with hub.running(), trio.open_nursery() as nursery:
        nursery.start_soon(culler.serve)
        await trio.sleep(5)  # the probe hangs in its request
        stopped_at = trio.current_time()
        culler.stop(grace=300)
    assert trio.current_time() == stopped_at, "nothing in flight deserves the grace period"


async def test_a_pass_probe_is_not_waited_for_after_a_stop(autojump_clock: trio.testing.MockClock) -> None:
    hub = FakeHub(token=TOKEN)

    async def refuse(request: httpx.Request) -> httpx.Response | None:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    hub.fault = refuse
    draining = trio.Event()
    report: PassReport | None = None

    async def one_pass() -> None:
        nonlocal report
        report = await run_pass(config(), transport=hub.transport(), now=NOW, draining=draining)

    async with hub.running(), trio.open_nursery() as nursery:
        nursery.start_soon(one_pass)
        await trio.sleep(2)  # inside the probe's retries (0.5 s, 1 s, 2 s, ...)
        draining.set()
        stopped_at = trio.current_time()
    assert report is not None
    assert report.interrupted
    assert report.aborted is None
    assert trio.current_time() == stopped_at


# -- messages that say what happened -----------------------------------------------------------------------


async def test_hub_answered_is_logged_only_once_the_token_is_accepted(
    autojump_clock: trio.testing.MockClock, timeline: Timeline
) -> None:
    hub = FakeHub(token="the-right-one")
    culler = Culler(config(cull_every=60), transport=hub.transport())
    async with hub.running(), trio.open_nursery() as nursery:
        nursery.start_soon(culler.serve)
        await trio.sleep(130)
        assert timeline.lines("answered") == [], "the hub answered the version probe, but refused the token"
        refusals = timeline.lines("refused the culler's token", logging.ERROR)
        assert len(refusals) >= 2
        assert "retrying in 60 s" in refusals[0][1]
        hub.token = TOKEN
        await trio.sleep(60)
        culler.stop(grace=0)
    answered = timeline.lines("answered at")
    assert len(answered) == 1
    assert answered[0][1] == f"Hub {hub.version} answered at {URL}"


async def test_a_refused_delete_is_an_error_not_a_cull(autojump_clock: trio.testing.MockClock) -> None:
    hub = FakeHub(token=TOKEN, clock=lambda: NOW)
    hub.populate(1, idle_fraction=1.0, seed=1, now=NOW)

    async def forbid(request: httpx.Request) -> httpx.Response | None:
        if request.method == "DELETE":
            return httpx.Response(403, json={"status": 403, "message": "requires any of [delete:servers]"})
        return None

    hub.fault = forbid
    async with hub.running():
        report = await run_pass(config(), transport=hub.transport(), now=NOW)
    assert report.servers_culled == {}
    assert report.errors_by_kind == {"auth": 1}
    assert "culled 0 servers" in report.summary()
    assert "1 error," in report.summary()


async def test_a_failed_delete_is_not_counted_as_culled(autojump_clock: trio.testing.MockClock) -> None:
    hub = FakeHub(token=TOKEN, clock=lambda: NOW)
    hub.populate(2, idle_fraction=1.0, seed=1, now=NOW)

    async def fail_one(request: httpx.Request) -> httpx.Response | None:
        if request.method == "DELETE" and "user-0" in request.url.path:
            return httpx.Response(400, json={"status": 400, "message": "no"})
        return None

    hub.fault = fail_one
    async with hub.running():
        report = await run_pass(config(), transport=hub.transport(), now=NOW)
    assert report.servers_culled == {"idle": 1}
    assert report.errors_by_kind == {"status": 1}


def test_summary_and_progress_use_singulars() -> None:
    recorder = PassRecorder(started=NOW, started_at=0.0, dry_run=False)
    recorder.users_seen = recorder.servers_seen = recorder.users_deleted = recorder.users_culled = 1
    recorder.servers_culled["idle"] = 1
    recorder.servers_stopped = recorder.pages = 1
    recorder.errors_by_kind["status"] = 1
    summary = recorder.finish(1.0).summary()
    assert summary == (
        "Pass done in 1.00s: 1 user seen (1 server), culled 1 server (1 stopped, 0 still stopping), "
        "deleted 1 user, 0 skipped, 1 error, 1 page"
    )
    assert recorder.progress_line() == (
        "Pass in progress: 1 user seen (hub lists ?), 1 server culled, 1 user deleted, 1 error"
    )
    recorder.users_seen = 2
    assert "2 users seen" in recorder.finish(1.0).summary()


# -- metrics from a cold start ------------------------------------------------------------------------------


def test_every_label_exists_at_zero_from_a_cold_start() -> None:
    samples = every_metric(Metrics())
    for reason in CULL_REASONS:
        assert samples[("trio_culler_servers_culled_total", (("reason", reason),))] == 0
    for kind in ERROR_KINDS:
        assert samples[("trio_culler_errors_total", (("kind", kind),))] == 0
    assert samples[("trio_culler_hub_up", ())] == 0


def _subclasses(cls: type[HubError]) -> list[type[HubError]]:
    found: list[type[HubError]] = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def test_every_error_kind_has_a_label() -> None:
    import trio_culler._scopes  # noqa: F401 - defines MissingScopes (kind "scope")

    kinds = {sub.kind for sub in _subclasses(HubError)}
    assert kinds <= set(ERROR_KINDS)
    assert {"unreadable", "internal"} <= set(ERROR_KINDS)


async def test_a_scope_error_counts_in_the_metric(autojump_clock: trio.testing.MockClock) -> None:
    hub = FakeHub(token=TOKEN, clock=lambda: NOW, scopes=("list:users", "read:servers", "read:users:activity"))
    metrics = Metrics()
    async with hub.running():
        metrics.observe(await run_pass(config(), transport=hub.transport(), now=NOW))
    samples = every_metric(metrics)
    assert samples[("trio_culler_errors_total", (("kind", "scope"),))] == 1
    assert samples[("trio_culler_hub_up", ())] == 1, "the hub is up and accepted the token; the role is wrong"
    assert samples[("trio_culler_last_pass_success", ())] == 0


async def test_a_pass_the_hub_does_not_answer_is_one_line_naming_the_cause_once(
    autojump_clock: trio.testing.MockClock, timeline: Timeline
) -> None:
    # What --once sees against a hub that is down: the retries at DEBUG, with their true waits, then one line.
    hub = FakeHub(token=TOKEN)
    attempts: list[float] = []

    async def refuse(request: httpx.Request) -> httpx.Response | None:
        attempts.append(trio.current_time())
        # As trio and httpx report a refused connection: a wrapper of a wrapper of the OSError that says why.
        raise httpx.ConnectError("all attempts to connect to 127.0.0.1:8081 failed", request=request) from OSError(
            errno.ECONNREFUSED, "Error connecting to ('127.0.0.1', 8081): Connection refused"
        )

    hub.fault = refuse
    start = trio.current_time()
    logging.getLogger("trio_culler").setLevel(logging.DEBUG)  # the fixture restores it
    async with hub.running():
        report = await run_pass(config(max_retries=3), transport=hub.transport(), now=NOW)
    lines = [(t, r.levelname, r.getMessage()) for t, r in timeline.records if r.levelno >= logging.INFO]
    assert lines == [
        (
            start + 3.5,
            "ERROR",
            f"Pass not run: the hub at {URL} could not be reached: connection refused (4 attempts)",
        )
    ]
    retries = timeline.lines("retrying in")
    assert [text.rsplit("retrying in ", 1)[1] for _, text in retries] == [
        "0.5 s (1 of 3)",
        "1 s (2 of 3)",
        "2 s (3 of 3)",
    ]
    assert all(r.levelno == logging.DEBUG for _t, r in timeline.records if "retrying in" in r.getMessage())
    assert [t - start for t in attempts] == [0, 0.5, 1.5, 3.5], "each announced wait is the wait"
    assert report.errors_by_kind == {"unavailable": 1}


async def test_a_hub_on_a_closed_port_is_named_by_the_cause_the_socket_gave(timeline: Timeline) -> None:
    # Real loopback: a port nothing listens on, through the project's own transport.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hub/api"
    report = await run_pass(config(url=url, max_retries=0), now=NOW)
    assert report.summary() == f"Pass not run: the hub at {url} could not be reached: connection refused"
    assert [r.getMessage() for _t, r in timeline.records if r.levelno >= logging.INFO] == [report.summary()]


async def test_a_culler_says_once_per_pass_that_the_hub_is_down_and_once_that_it_answers_again(
    autojump_clock: trio.testing.MockClock, timeline: Timeline
) -> None:
    hub = FakeHub(token=TOKEN, clock=lambda: NOW)
    hub.populate(2, idle_fraction=0.0, seed=1, now=NOW)
    down = False

    async def fault(request: httpx.Request) -> httpx.Response | None:
        if down:
            raise httpx.ConnectError("all attempts failed", request=request) from ConnectionRefusedError(
                errno.ECONNREFUSED, "Connection refused"
            )
        return None

    hub.fault = fault
    culler = Culler(config(cull_every=600, max_retries=2), transport=hub.transport())
    async with hub.running(), trio.open_nursery() as nursery:
        await nursery.start(culler.serve)
        await culler.run_pass_now()
        down = True
        went_down = len(timeline.records)
        reports = [await culler.run_pass_now() for _ in range(3)]
        down = False
        mark = len(timeline.records)
        await culler.run_pass_now()
        culler.stop(grace=0)
    # While the hub is down: one line per pass, and nothing else at INFO or above.
    while_down = [
        (r.levelname, r.getMessage()) for _t, r in timeline.records[went_down:mark] if r.levelno >= logging.INFO
    ]
    line = f"Pass not run: the hub at {URL} could not be reached: connection refused (3 attempts)"
    assert while_down == [("ERROR", line)] * 3
    after = [(r.levelname, r.getMessage()) for _t, r in timeline.records[mark:]]
    assert after[0] == (
        "INFO",
        f"The hub at {URL} answers again, after 3 passes not run since {iso_utc(reports[0].started)}",
    )
    assert after[1][1].startswith("Pass done in ")
    assert len([line for line in after if "answers again" in line[1]]) == 1


async def test_a_slow_stop_says_the_user_is_kept_only_when_users_may_be_culled(
    autojump_clock: trio.testing.MockClock, timeline: Timeline
) -> None:
    for cull_users, line in (
        (False, "Server user-0 is slow to stop: the hub answered 202 and goes on stopping it"),
        (True, "Server user-0 is slow to stop; its user is kept this pass"),
    ):
        hub = FakeHub(token=TOKEN, clock=lambda: NOW, stop_latency=30, slow_stop_timeout=10)
        hub.populate(1, idle_fraction=1.0, seed=1, now=NOW)
        mark = len(timeline.records)
        async with hub.running():
            report = await run_pass(config(cull_users=cull_users), transport=hub.transport(), now=NOW)
            await hub.wait_stops_done()
        assert report.servers_pending == 1
        assert [r.getMessage() for _t, r in timeline.records[mark:] if r.levelno == logging.WARNING] == [line]
