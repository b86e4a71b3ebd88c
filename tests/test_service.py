"""The long-running culler and the embedding API: serve, open_culler, run_pass_now, stop, pass spacing."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing

from trio_culler import Config, Culler, CullerStopped, PassReport, open_culler, run_pass, serve
from trio_culler._service import Drain
from trio_culler.testing import FakeHub, FakeServer, open_fake_hub

TOKEN = "service-test-token"


def config(**changes: Any) -> Config:
    return attrs.evolve(Config(api_token=TOKEN, url="http://127.0.0.1:8081/hub/api", timeout=600), **changes)


def idle_hub(n: int, **options: Any) -> FakeHub:
    hub = FakeHub(token=TOKEN, **options)
    old = datetime.now(UTC) - timedelta(hours=3)
    for i in range(n):
        hub.add_user(f"idle-{i}", created=old, last_activity=old, servers={"": FakeServer("", old, old)})
    return hub


async def test_serve_reports_started_after_the_hub_answered(autojump_clock: trio.testing.MockClock) -> None:
    hub = idle_hub(5)
    reports: list[PassReport] = []
    async with hub.running(), trio.open_nursery() as nursery:
        culler: Culler = await nursery.start(
            lambda task_status: serve(
                config(), transport=hub.transport(), reporters=[reports.append], task_status=task_status
            )
        )
        # The probe was answered before started() (the first pass may already have sent its own probe since).
        assert hub.statistics().requests_by_kind["version"] >= 1
        report = await culler.run_pass_now()
        assert culler.last_report is report
        # Whether the first scheduled pass had begun when run_pass_now() was called is a race; either way
        # the report returned is of a pass that started after the call, and the idle servers are gone.
        assert reports[-1] is report
        assert sum(r.servers_stopped for r in reports) == 5
        culler.stop()
    assert all(user.servers == {} for user in hub.users.values())


async def test_first_pass_at_once_then_every_interval_never_overlapping(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Stops take 4 s at the hub and a pass 8 s; the interval is 5 s: passes must queue, not overlap.
    hub = idle_hub(20, stop_latency=4.0, slow_stop_timeout=100)
    passes: list[tuple[float, float]] = []
    versions: list[float] = []

    async def note(request: httpx.Request) -> httpx.Response | None:
        if request.url.path.endswith("/hub/api/"):
            versions.append(trio.current_time())
        return None

    hub.fault = note

    def record(report: PassReport) -> None:
        passes.append((trio.current_time() - report.duration, trio.current_time()))

    started = trio.current_time()
    async with hub.running(), trio.open_nursery() as nursery:
        culler = Culler(config(cull_every=5, concurrency=10), transport=hub.transport(), reporters=[record])
        nursery.start_soon(lambda: culler.serve())
        await trio.sleep(30)
        # New idle users keep the passes busy.
        culler.stop(grace=0)
    assert len(passes) >= 3
    # The first pass begins as soon as the hub answered (probe at t=0), not one interval later.
    assert passes[0][0] - started < 0.5
    for (_, end), (next_start, _) in itertools.pairwise(passes):
        assert next_start >= end, "a pass started before the previous one ended"
    # Start-to-start spacing is the interval when passes are short enough.
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(await pass_ends(config(cull_every=7), 30))]
    assert gaps
    assert all(gap == 7 for gap in gaps)
    assert versions


async def pass_ends(cfg: Config, run_for: float) -> list[float]:
    """When each pass of a culler run for ``run_for`` seconds against an empty hub ended (a pass there takes no
    time: these are the pass starts too)."""
    hub = idle_hub(0)
    ends: list[float] = []
    async with hub.running(), trio.open_nursery() as nursery:
        culler = Culler(cfg, transport=hub.transport(), reporters=[lambda r: ends.append(trio.current_time())])
        nursery.start_soon(lambda: culler.serve())
        await trio.sleep(run_for)
        culler.stop(grace=0)
    return ends


async def test_cull_every_zero_means_half_the_timeout(autojump_clock: trio.testing.MockClock) -> None:
    assert len(await pass_ends(config(timeout=100), 175)) == 4  # t = 0, 50, 100, 150


async def test_run_pass_now_during_a_pass_waits_for_a_fresh_one(autojump_clock: trio.testing.MockClock) -> None:
    hub = idle_hub(10, stop_latency=2.0)
    async with hub.running(), open_culler(config(cull_every=3600), transport=hub.transport()) as culler:
        await trio.sleep(0.5)  # the first pass is under way
        assert culler.statistics().pass_running
        report = await culler.run_pass_now()
        assert culler.statistics().passes_completed == 2
        assert report.users_seen == 0, "the fresh pass sees the hub after the first pass culled everyone"


async def test_graceful_stop_lets_requests_in_flight_finish(autojump_clock: trio.testing.MockClock) -> None:
    hub = idle_hub(40, stop_latency=1.0)
    async with hub.running(), trio.open_nursery() as nursery:
        culler = Culler(config(concurrency=4), transport=hub.transport())
        nursery.start_soon(lambda: culler.serve())
        await trio.sleep(2.5)  # mid-pass: 4 stops in flight, 8 done
        stopped_at = trio.current_time()
        culler.stop(grace=5)
    # The 4 stops in flight finished (1 s < grace) and nothing new was started.
    assert trio.current_time() - stopped_at <= 5
    stats = hub.statistics()
    assert len(stats.stops_completed) == sum(stats.stop_requests.values())
    assert 8 <= len(stats.stops_completed) < 40
    assert culler.last_report is not None
    assert culler.last_report.interrupted


async def test_stop_without_grace_cancels_at_once(autojump_clock: trio.testing.MockClock) -> None:
    hub = idle_hub(10, stop_latency=30.0, slow_stop_timeout=100)
    async with hub.running():
        async with trio.open_nursery() as nursery:
            culler = Culler(config(), transport=hub.transport())
            nursery.start_soon(lambda: culler.serve())
            await trio.sleep(1)
            before = trio.current_time()
            culler.stop(grace=0)
        assert trio.current_time() - before < 0.01
        assert culler.last_report is None
        # A cancelled DELETE is not an undo: the hub goes on stopping the servers it was asked to stop.
        await hub.wait_stops_done()
    assert len(hub.statistics().stops_completed) == 10


async def test_run_pass_over_real_loopback_http() -> None:
    hub = idle_hub(25)
    async with open_fake_hub(hub) as api_url:
        report = await run_pass(config(url=api_url))
    assert report.ok
    assert report.servers_stopped == 25
    assert hub.statistics().connections >= 1


async def test_an_embedding_application_runs_the_culler_in_its_own_nursery(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = idle_hub(3)
    reports: list[PassReport] = []
    async with hub.running(), trio.open_nursery() as app:
        # The application's own work goes on beside the culler.
        ticks = 0

        async def heartbeat() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await trio.sleep(1)

        app.start_soon(heartbeat)
        culler = await app.start(
            lambda task_status: serve(
                config(cull_every=10), transport=hub.transport(), reporters=[reports.append], task_status=task_status
            )
        )
        await trio.sleep(25)
        culler.stop()
        app.cancel_scope.cancel()
    assert len(reports) == 3  # t = 0, 10, 20
    assert reports[0].servers_stopped == 3
    assert ticks >= 25


async def test_run_pass_now_between_passes_starts_one_early_and_callers_share_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = idle_hub(4)
    async with hub.running(), open_culler(config(cull_every=3600), transport=hub.transport()) as culler:
        await trio.sleep(10)  # the first pass is done; the next is an hour away
        assert culler.statistics().passes_completed == 1
        assert not culler.statistics().pass_running
        woken_at = trio.current_time()
        reports: list[PassReport] = []
        async with trio.open_nursery() as callers:
            for _ in range(3):
                callers.start_soon(lambda: _append(reports, culler.run_pass_now()))
        assert trio.current_time() - woken_at < 60, "woken early, not at the scheduled hour"
        assert culler.statistics().passes_completed == 2, "three callers, one early pass"
        assert reports[0] is reports[1] is reports[2] is culler.last_report


async def _append(reports: list[PassReport], report: Awaitable[PassReport]) -> None:
    reports.append(await report)


async def test_every_pass_is_logged_once_and_reported_once(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    hub = idle_hub(3)
    caplog.set_level(logging.INFO, logger="trio_culler")
    reports: list[PassReport] = []
    async with (
        hub.running(),
        open_culler(config(cull_every=10), transport=hub.transport(), reporters=[reports.append]) as culler,
    ):
        await trio.sleep(25)
        culler.stop()
    summaries = [r for r in caplog.records if getattr(r, "event", None) == "pass"]
    assert len(reports) == len(summaries) == 3
    assert [r.getMessage() for r in summaries] == [report.summary() for report in reports]


async def test_run_pass_logs_and_reports_its_pass_and_survives_a_failing_reporter(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    hub = idle_hub(2)
    caplog.set_level(logging.INFO, logger="trio_culler")
    seen: list[PassReport] = []

    def broken(report: PassReport) -> None:
        raise RuntimeError("reporter bug")

    async with hub.running():
        report = await run_pass(config(), transport=hub.transport(), reporters=[broken, seen.append])
    assert seen == [report], "a failing reporter does not keep the report from the next one"
    assert report.servers_stopped == 2
    assert [r.getMessage() for r in caplog.records if getattr(r, "event", None) == "pass"] == [report.summary()]
    assert any(r.getMessage() == "A pass reporter failed" for r in caplog.records)


# -- run_pass_now() on a culler that stopped --------------------------------------------------------------------
# Each waits under fail_after on the autojump clock: a run_pass_now() that hangs fails the test instead.


async def test_run_pass_now_after_stop_raises_at_once(autojump_clock: trio.testing.MockClock) -> None:
    hub = idle_hub(2)
    async with hub.running(), trio.open_nursery() as nursery:
        culler: Culler = await nursery.start(
            lambda task_status: serve(config(), transport=hub.transport(), task_status=task_status)
        )
        await culler.run_pass_now()
        culler.stop()
        asked_at = trio.current_time()
        with trio.fail_after(3600), pytest.raises(CullerStopped, match="stopped"):
            await culler.run_pass_now()
        assert trio.current_time() == asked_at, "raised at once, without waiting for anything"
    # And once serve() has returned, too.
    with trio.fail_after(3600), pytest.raises(CullerStopped):
        await culler.run_pass_now()


async def test_callers_waiting_when_the_culler_stops_are_woken_with_the_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A pass is under way (slow stops); two callers wait for the pass after it, which will never start.
    hub = idle_hub(10, stop_latency=5.0, slow_stop_timeout=100)
    outcomes: list[str] = []

    async def wait_for_a_pass(culler: Culler) -> None:
        try:
            await culler.run_pass_now()
        except CullerStopped:
            outcomes.append("stopped")
        else:
            outcomes.append("report")

    async with hub.running(), trio.open_nursery() as nursery:
        culler = Culler(config(concurrency=2), transport=hub.transport())
        nursery.start_soon(lambda: culler.serve())
        await trio.sleep(1)
        assert culler.statistics().pass_running
        with trio.fail_after(3600):
            async with trio.open_nursery() as callers:
                callers.start_soon(wait_for_a_pass, culler)
                callers.start_soon(wait_for_a_pass, culler)
                await trio.sleep(1)
                culler.stop(grace=10)
    assert outcomes == ["stopped", "stopped"]


async def test_callers_are_woken_when_serve_ends_without_stop(autojump_clock: trio.testing.MockClock) -> None:
    # The hub never answers the start-up probe; the embedding application then cancels the culler's nursery
    # (its own shutdown): a caller outside that nursery must not wait forever.
    hub = idle_hub(1)

    async def never(request: httpx.Request) -> httpx.Response | None:
        return httpx.Response(503, json={"status": 503, "message": "starting"})

    hub.fault = never
    outcome: list[BaseException] = []
    woken = trio.Event()

    async def caller(culler: Culler) -> None:
        try:
            await culler.run_pass_now()
        except CullerStopped as error:
            outcome.append(error)
        woken.set()

    async with hub.running(), trio.open_nursery() as app:
        culler = Culler(config(), transport=hub.transport())
        app.start_soon(caller, culler)
        async with trio.open_nursery() as culler_nursery:
            culler_nursery.start_soon(lambda: culler.serve())
            await trio.sleep(30)
            assert culler.statistics().passes_started == 0, "still waiting for the hub"
            culler_nursery.cancel_scope.cancel()
        with trio.fail_after(3600):
            await woken.wait()
    assert len(outcome) == 1
    assert "no pass will run" in str(outcome[0])


async def test_a_caller_waiting_for_the_pass_under_way_gets_its_report_when_stop_lets_it_finish(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A pass that was already asked for and is running when stop() comes is not abandoned: it drains and its
    # (interrupted) report is what the caller gets.
    hub = idle_hub(6, stop_latency=2.0)
    async with hub.running(), trio.open_nursery() as nursery:
        culler = Culler(config(concurrency=2, cull_every=3600), transport=hub.transport())
        reports: list[PassReport] = []
        async with trio.open_nursery() as callers:
            callers.start_soon(lambda: _append(reports, culler.run_pass_now()))
            nursery.start_soon(lambda: culler.serve())
            await trio.sleep(1)
            assert culler.statistics().pass_running
            culler.stop(grace=10)
    assert len(reports) == 1
    assert reports[0].interrupted


async def test_a_drain_shortens_its_grace_never_lengthens_it(autojump_clock: trio.testing.MockClock) -> None:
    # The one graceful stop behind Culler.stop() and the command line's --once (a first signal drains, a
    # second one stops at once).
    drain = Drain()
    cancelled_at = None
    with drain.scope:
        assert not drain.draining.is_set()
        drain.stop(10)
        assert drain.draining.is_set()
        drain.stop(60)  # a later, longer grace does not extend the first
        await trio.sleep(5)
        drain.stop(1)  # a shorter one wins
        try:
            await trio.sleep_forever()
        finally:
            cancelled_at = trio.current_time()
    assert drain.scope.cancelled_caught
    assert cancelled_at == 6
