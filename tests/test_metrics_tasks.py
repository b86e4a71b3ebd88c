"""The trio task gauge (``trio_culler_trio_tasks``): every task of the run, nested nurseries included, counted at
the end of each pass; the soak fits its growth over hours to find a leak of tasks."""

from __future__ import annotations

from datetime import UTC, datetime

import trio
import trio.testing
from prometheus_client import CollectorRegistry

from trio_culler._metrics import Metrics, count_trio_tasks
from trio_culler._report import PassRecorder


def gauge(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value("trio_culler_trio_tasks")


def report() -> object:
    return PassRecorder(started=datetime(2026, 1, 1, tzinfo=UTC), started_at=0.0, dry_run=False).finish(1.0)


async def test_the_count_walks_every_nursery_down_from_the_root() -> None:
    before = count_trio_tasks()
    assert before is not None
    assert before >= 2  # trio's init task and this test's own, at least
    release = trio.Event()

    async def parent(task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as inner:
            for _ in range(3):
                inner.start_soon(release.wait)
            task_status.started()
            await release.wait()

    async with trio.open_nursery() as nursery:
        await nursery.start(parent)
        nursery.start_soon(release.wait)
        # One parent with three children in a nested nursery, and one more beside it.
        assert count_trio_tasks() == before + 5
        release.set()
    assert count_trio_tasks() == before


async def test_each_pass_sets_the_gauge() -> None:
    metrics = Metrics()
    assert gauge(metrics.registry) == 0
    release = trio.Event()
    async with trio.open_nursery() as nursery:
        metrics.observe(report())  # type: ignore[arg-type]
        first = gauge(metrics.registry)
        for _ in range(4):
            nursery.start_soon(release.wait)
        await trio.testing.wait_all_tasks_blocked()
        metrics.observe(report())  # type: ignore[arg-type]
        assert gauge(metrics.registry) == (first or 0) + 4
        release.set()
    assert first == count_trio_tasks()


def test_outside_a_trio_run_the_gauge_is_left_alone() -> None:
    assert count_trio_tasks() is None
    metrics = Metrics()
    metrics.observe(report())  # type: ignore[arg-type]
    assert gauge(metrics.registry) == 0
