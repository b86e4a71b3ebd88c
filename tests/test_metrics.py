"""Metrics that alert: every state a pass can end in, as Prometheus reads it, on trio's autojump clock against
FakeHub. A pass that did not run is counted by its outcome and moves nothing an alert on staleness reads."""

from __future__ import annotations

import errno
from datetime import timedelta
from typing import Any

import attrs
import httpx
import trio
import trio.testing

from trio_culler import Config, PassReport, run_pass
from trio_culler._engine import run_pass_with
from trio_culler._hub import open_hub_client
from trio_culler._metrics import KEPT_REASONS, Metrics
from trio_culler._notify import open_notifier
from trio_culler._report import OUTCOMES
from trio_culler._service import Culler
from trio_culler._version import __version__
from trio_culler.testing import FakeHub, FakeKernel, FakeServer

from .support.faults import NOW, TOKEN, URL

H = timedelta(hours=1)
M = timedelta(minutes=1)


def config(**changes: Any) -> Config:
    return attrs.evolve(Config(api_token=TOKEN, url=URL, timeout=3600), **changes)


def value(metrics: Metrics, name: str, **labels: str) -> float:
    sample = metrics.registry.get_sample_value(name, labels)
    assert sample is not None, f"{name}{labels} is not exported"
    return sample


def passes(metrics: Metrics) -> dict[str, float]:
    return {outcome: value(metrics, "trio_culler_passes_total", outcome=outcome) for outcome in OUTCOMES}


def hub_with(**servers: FakeServer) -> FakeHub:
    hub = FakeHub(token=TOKEN, clock=lambda: NOW, public_url="http://proxy.test")
    for user, server in servers.items():
        hub.add_user(user, created=NOW - 5 * H, last_activity=server.last_activity, servers={"": server})
    return hub


def idle_server(idle: timedelta = 2 * H, kernels: list[FakeKernel] | None = None) -> FakeServer:
    return FakeServer("", started=NOW - 5 * H, last_activity=NOW - idle, kernels=kernels or [])


async def one_pass(hub: FakeHub, cfg: Config, metrics: Metrics) -> PassReport:
    async with hub.running():
        report = await run_pass(cfg, transport=hub.transport(), now=NOW, reporters=[metrics.observe])
        await hub.wait_stops_done()
    return report


def refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("all attempts failed", request=request) from ConnectionRefusedError(
        errno.ECONNREFUSED, "Connection refused"
    )


# --- from a cold start ----------------------------------------------------------------------------------------


def test_a_cold_start_exports_every_outcome_reason_and_the_version_at_zero() -> None:
    metrics = Metrics(interval=300)
    assert passes(metrics) == dict.fromkeys(OUTCOMES, 0)
    for reason in KEPT_REASONS:
        assert value(metrics, "trio_culler_servers_kept", reason=reason) == 0
    for reason in ("idle", "max_age"):
        assert value(metrics, "trio_culler_servers_would_cull_total", reason=reason) == 0
    assert value(metrics, "trio_culler_last_successful_pass_timestamp_seconds") == 0
    assert value(metrics, "trio_culler_config_error") == 0
    assert value(metrics, "trio_culler_warnings_pending") == 0
    assert value(metrics, "trio_culler_pass_interval_seconds") == 300
    assert metrics.registry.get_sample_value("trio_culler_build_info", {"version": __version__}) is None
    (build,) = [s for f in metrics.registry.collect() if f.name == "trio_culler_build" for s in f.samples]
    assert build.labels["version"] == __version__
    assert build.value == 1
    # The staleness alert's grace at start-up reads when the process started.
    assert value(metrics, "process_start_time_seconds") > 0
    metrics.observe_config_error()
    assert value(metrics, "trio_culler_config_error") == 1


# --- one pass, each outcome -----------------------------------------------------------------------------------


async def test_a_pass_that_ran_moves_both_timestamps_and_the_histogram(autojump_clock: trio.testing.MockClock) -> None:
    metrics = Metrics()
    report = await one_pass(hub_with(ann=idle_server(), bob=idle_server(idle=M)), config(), metrics)
    assert report.outcome == "ran"
    finished = report.started.timestamp() + report.duration
    assert passes(metrics) == {**dict.fromkeys(OUTCOMES, 0), "ran": 1}
    assert value(metrics, "trio_culler_pass_duration_seconds_count") == 1
    assert value(metrics, "trio_culler_last_pass_timestamp_seconds") == finished
    assert value(metrics, "trio_culler_last_successful_pass_timestamp_seconds") == finished
    assert value(metrics, "trio_culler_servers_culled_total", reason="idle") == 1
    assert value(metrics, "trio_culler_servers_kept", reason="active") == 1
    assert value(metrics, "trio_culler_last_pass_success") == 1


async def test_a_pass_the_hub_does_not_answer_moves_no_timestamp(autojump_clock: trio.testing.MockClock) -> None:
    metrics = Metrics()
    hub = hub_with(ann=idle_server())
    await one_pass(hub, config(), metrics)
    before = {
        name: value(metrics, name)
        for name in (
            "trio_culler_last_pass_timestamp_seconds",
            "trio_culler_last_successful_pass_timestamp_seconds",
            "trio_culler_pass_duration_seconds_count",
            "trio_culler_pass_duration_seconds_sum",
            "trio_culler_users_seen",
        )
    }

    async def down(request: httpx.Request) -> httpx.Response:
        return refuse(request)

    hub.fault = down
    report = await one_pass(hub, config(max_retries=2), metrics)
    assert report.outcome == "hub_down"
    assert passes(metrics) == {**dict.fromkeys(OUTCOMES, 0), "ran": 1, "hub_down": 1}
    assert {name: value(metrics, name) for name in before} == before
    assert value(metrics, "trio_culler_hub_up") == 0
    assert value(metrics, "trio_culler_last_pass_success") == 0
    assert value(metrics, "trio_culler_errors_total", kind="unavailable") == 1


async def test_a_hub_answering_503_is_down_too(autojump_clock: trio.testing.MockClock) -> None:
    metrics = Metrics()
    hub = hub_with(ann=idle_server())

    async def unavailable(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"status": 503, "message": "restarting"})

    hub.fault = unavailable
    report = await one_pass(hub, config(max_retries=1), metrics)
    assert report.outcome == "hub_down"
    assert value(metrics, "trio_culler_pass_duration_seconds_count") == 0


async def test_missing_scopes_and_a_refused_token_are_the_scopes_outcome(
    autojump_clock: trio.testing.MockClock,
) -> None:
    metrics = Metrics()
    lacking = FakeHub(token=TOKEN, clock=lambda: NOW, scopes=("list:users", "read:servers", "read:users:activity"))
    assert (await one_pass(lacking, config(), metrics)).outcome == "scopes"
    refusing = FakeHub(token="another-token", clock=lambda: NOW)
    assert (await one_pass(refusing, config(), metrics)).outcome == "scopes"
    assert passes(metrics) == {**dict.fromkeys(OUTCOMES, 0), "scopes": 2}
    assert value(metrics, "trio_culler_pass_duration_seconds_count") == 0
    assert value(metrics, "trio_culler_last_pass_timestamp_seconds") == 0


async def test_a_page_that_cannot_be_read_is_a_failed_pass_that_ran(autojump_clock: trio.testing.MockClock) -> None:
    metrics = Metrics()
    hub = FakeHub(token=TOKEN, clock=lambda: NOW, default_page_size=2)
    hub.populate(6, idle_fraction=0.5, seed=3, now=NOW)

    async def lose_a_page(request: httpx.Request) -> httpx.Response | None:
        if request.url.path.endswith("/users") and request.url.params.get("offset") == "2":
            return httpx.Response(400, json={"status": 400, "message": "no"})
        return None

    hub.fault = lose_a_page
    report = await one_pass(hub, config(), metrics)
    assert (report.outcome, report.pages_failed) == ("failed", 1)
    assert passes(metrics)["failed"] == 1
    # It read users: its duration and end are worth plotting; it is not a success.
    assert value(metrics, "trio_culler_pass_duration_seconds_count") == 1
    assert value(metrics, "trio_culler_last_pass_timestamp_seconds") > 0
    assert value(metrics, "trio_culler_last_successful_pass_timestamp_seconds") == 0


async def test_a_wrong_url_is_a_failed_pass_that_did_not_run(autojump_clock: trio.testing.MockClock) -> None:
    metrics = Metrics()
    hub = hub_with(ann=idle_server())

    async def redirect(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"location": "/hub/"})

    hub.fault = redirect
    report = await one_pass(hub, config(url="http://127.0.0.1:8081"), metrics)
    assert report.outcome == "failed"
    assert report.summary() == (
        "Pass not run: the hub at http://127.0.0.1:8081 answered what the culler cannot use: HTTP 302 (the hub "
        "answered with a redirect to /hub/; --url must be the hub's API URL, e.g. http://127.0.0.1:8081/hub/api)"
    )
    assert value(metrics, "trio_culler_pass_duration_seconds_count") == 0


async def test_an_interrupted_pass_is_its_own_outcome(autojump_clock: trio.testing.MockClock) -> None:
    metrics = Metrics()
    hub = FakeHub(token=TOKEN, clock=lambda: NOW, stop_latency=5.0)
    hub.populate(20, idle_fraction=1.0, seed=2, now=NOW)
    draining = trio.Event()
    async with hub.running(), trio.open_nursery() as nursery:

        async def stop_soon() -> None:
            await trio.sleep(1)
            draining.set()

        nursery.start_soon(stop_soon)
        report = await run_pass(
            config(concurrency=2), transport=hub.transport(), now=NOW, draining=draining, reporters=[metrics.observe]
        )
    assert report.outcome == "interrupted"
    assert passes(metrics)["interrupted"] == 1
    assert value(metrics, "trio_culler_last_successful_pass_timestamp_seconds") == 0


async def test_dry_run_culls_are_counted_apart(autojump_clock: trio.testing.MockClock) -> None:
    metrics = Metrics()
    hub = hub_with(ann=idle_server(), bob=idle_server())
    await one_pass(hub, config(dry_run=True, cull_users=True), metrics)
    assert value(metrics, "trio_culler_servers_culled_total", reason="idle") == 0
    assert value(metrics, "trio_culler_users_culled_total") == 0
    assert value(metrics, "trio_culler_servers_would_cull_total", reason="idle") == 2
    assert value(metrics, "trio_culler_users_would_cull_total") == 2
    assert hub.statistics().stop_requests == {}
    await one_pass(hub, config(), metrics)
    assert value(metrics, "trio_culler_servers_culled_total", reason="idle") == 2
    assert value(metrics, "trio_culler_servers_would_cull_total", reason="idle") == 2


# --- servers kept, by why -------------------------------------------------------------------------------------


async def test_servers_kept_by_why_exempt_busy_and_active(autojump_clock: trio.testing.MockClock) -> None:
    metrics = Metrics()
    hub = hub_with(
        vip=idle_server(),
        computing=idle_server(kernels=[FakeKernel("k", "busy", NOW - 3 * H)]),
        ann=idle_server(idle=M),
        cleo=idle_server(idle=2 * M),
        gone=idle_server(),
    )
    cfg = config(inspect_kernels=True, public_url="http://proxy.test", rules=[{"users": ["vip"], "cull": False}])
    report = await one_pass(hub, cfg, metrics)
    assert report.servers_kept == {"exempt": 1, "kernel_busy": 1, "active": 2}
    assert report.servers_culled == {"idle": 1}
    assert value(metrics, "trio_culler_servers_kept", reason="exempt") == 1
    assert value(metrics, "trio_culler_servers_kept", reason="kernel_busy") == 1
    assert value(metrics, "trio_culler_servers_kept", reason="active") == 2
    assert value(metrics, "trio_culler_servers_kept", reason="warned") == 0


async def test_a_user_reread_where_pages_overlap_is_kept_once(autojump_clock: trio.testing.MockClock) -> None:
    # Two pages of 2, all active: the pager reads the first page twice (its last step), and the kept count must
    # not count those users twice.
    hub = FakeHub(token=TOKEN, clock=lambda: NOW, default_page_size=2)
    for name in ("a", "b", "c", "d"):
        hub.add_user(name, servers={"": idle_server(idle=M)})
    report = await one_pass(hub, config(), Metrics())
    assert report.pages == 3, "the first page is read again at the end"
    assert report.servers_kept == {"active": 4}


async def test_servers_kept_for_their_notice_and_warnings_pending(autojump_clock: trio.testing.MockClock) -> None:
    """A warned server due now is kept until the promised notice runs out (``warned``); a hook that hangs leaves
    its warning waiting for delivery (``warnings_pending``) when the pass ends."""
    hub = hub_with(ann=idle_server(idle=2 * H), bob=idle_server(idle=55 * M))
    release = trio.Event()

    async def hook(user: dict[str, Any], server: dict[str, Any], cull_at: Any) -> None:
        await release.wait()

    cfg = config(warn_before=600, warn_hook=hook)
    metrics = Metrics()
    async with hub.running(), open_hub_client(cfg, transport=hub.transport()) as client, open_notifier(cfg) as n:
        report = await run_pass_with(client, cfg, now=NOW, notifier=n)
        metrics.observe(report)
        release.set()
    assert report.servers_kept == {"warned": 1, "active": 1}, "ann is due now, bob within the window"
    assert report.warnings_pending >= 1
    assert value(metrics, "trio_culler_servers_kept", reason="warned") == 1
    assert value(metrics, "trio_culler_warnings_pending") == report.warnings_pending


# --- over time: the staleness an alert reads ------------------------------------------------------------------


async def test_while_the_hub_is_down_the_last_success_stays_put_and_hub_down_passes_count(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A long-running culler: 3 passes, the hub down for the next 5, then back. The last successful pass's time
    is the third's until the hub answers again: what docs/alerts.yml's staleness alert reads."""
    hub = hub_with(ann=idle_server(idle=M))
    metrics = Metrics(interval=600)
    down = trio.Event()
    up = trio.Event()

    async def fault(request: httpx.Request) -> httpx.Response | None:
        return refuse(request) if down.is_set() and not up.is_set() else None

    hub.fault = fault
    culler = Culler(config(cull_every=600, max_retries=1), transport=hub.transport(), reporters=[metrics.observe])
    successes: list[float] = []
    async with hub.running(), trio.open_nursery() as nursery:
        await nursery.start(culler.serve)
        for _ in range(3):
            await culler.run_pass_now()
            successes.append(value(metrics, "trio_culler_last_successful_pass_timestamp_seconds"))
        down.set()
        for _ in range(5):
            report = await culler.run_pass_now()
            assert report.outcome == "hub_down"
            assert value(metrics, "trio_culler_last_successful_pass_timestamp_seconds") == successes[-1]
        up.set()
        await culler.run_pass_now()
        culler.stop(grace=0)
    assert successes == sorted(successes)
    assert value(metrics, "trio_culler_last_successful_pass_timestamp_seconds") > successes[-1]
    assert passes(metrics) == {**dict.fromkeys(OUTCOMES, 0), "ran": 4, "hub_down": 5}
    assert value(metrics, "trio_culler_pass_duration_seconds_count") == 4
