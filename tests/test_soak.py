"""Soak: several hundred passes against a loopback hub (real sockets) that fails a few requests at random leave
the process's objects, memory and open file descriptors where they were after warm-up.

Memory is judged by a census of the objects the garbage collector tracks, by type, which sees a leak of one
object per pass, plus resident memory with a loose bound. Two sources of growth are by design and accounted for:
FakeHub records every page it served (``PageRequest``), and trio keeps a cancel scope whose deadline has not yet
come in its deadline heap even after the scope is left. Every deadline here is short (request timeout, pass
interval, progress interval and the hub's slow-stop wait are all about a second), so a pause before each count
lets those entries expire and the heap drain.
"""

from __future__ import annotations

import collections
import gc
import logging
import os
import random
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import trio

import trio_culler._http
from trio_culler import Config, Culler, run_pass
from trio_culler._retry import Backoff
from trio_culler.testing import FakeHub, FakeServer, Population, open_fake_hub

from .support.faults import TOKEN, hub_answer, is_nested

WARM_UP = 50
PASSES = 250
USERS = 200
CONCURRENCY = 4
#: Longer than every deadline in play (about 1 s), so that trio's deadline heap holds no stale entry.
DRAIN = 1.5
#: Per type of object: what may differ between two censuses without a leak (noise seen: up to about 25).
PER_TYPE = 60
TOTAL = 200


def census() -> collections.Counter[str]:
    gc.collect()
    counts = collections.Counter(type(obj).__qualname__ for obj in gc.get_objects())
    del counts["PageRequest"]  # FakeHub's own log of every page it served
    return counts


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def resident_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def restart_idle(hub: FakeHub, population: Population, since: datetime) -> None:
    # What the pass stopped comes back (as idle as before), so that every pass has the same work to do.
    for name, server in population.idle:
        servers = hub.users[name].servers
        if server not in servers:
            servers[server] = FakeServer(server, started=since, last_activity=since)


def random_faults(hub: FakeHub, rate: float, seed: int) -> collections.Counter[str]:
    """About ``rate`` of the requests fail: 503, 429 with ``Retry-After: 0``, a connection dropped before or
    after the hub acted. A request fails at most twice, so retries always win and every pass is clean."""
    attempts: collections.Counter[str] = collections.Counter()
    failed: collections.Counter[str] = collections.Counter()
    rng = random.Random(seed)

    async def fault(request: httpx.Request) -> httpx.Response | None:
        if is_nested(request):
            return None
        key = f"{request.method} {request.url}"
        attempts[key] += 1
        if attempts[key] > 2 or rng.random() >= rate:
            if request.method == "DELETE":
                del attempts[key]  # the same stop comes back next pass; keep the counter small
            return None
        kind = rng.choice(["503", "429", "dropped", "acted then dropped"])
        failed[kind] += 1
        if kind == "503":
            return httpx.Response(503, json={"message": "soak"})
        if kind == "429":
            return httpx.Response(429, headers={"Retry-After": "0"}, json={"message": "soak"})
        if kind == "acted then dropped":
            await hub_answer(hub, request)
        raise ConnectionAbortedError("soak: hang up without an answer")

    hub.fault = fault
    return failed


def assert_flat(before: collections.Counter[str], after: collections.Counter[str], what: str) -> None:
    grown = {kind: after[kind] - before[kind] for kind in after if after[kind] - before[kind] > PER_TYPE}
    assert grown == {}, f"{what}: objects accumulate by type: {grown}"
    total = sum(after.values()) - sum(before.values())
    assert total <= TOTAL, f"{what}: {total} more objects than after warm-up"


@pytest.mark.slow
async def test_hundreds_of_passes_leak_neither_memory_nor_descriptors(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # pytest keeps every log record it sees; were INFO enabled (by the ini, or a test before this one), the
    # culler's lines would pile up in the capture and look like a leak. Only what matters is kept.
    for name in ("trio_culler", "httpx", "httpcore"):
        caplog.set_level(logging.WARNING, logger=name)
    # Real time: keep the backoff tiny so that a retry costs milliseconds, not seconds.
    monkeypatch.setattr(trio_culler._http, "REQUEST_BACKOFF", Backoff(first=0.002, cap=0.02, jitter=True))
    now = datetime.now(UTC)
    idle_since = now - timedelta(hours=3)
    hub = FakeHub(token=TOKEN, clock=lambda: now, slow_stop_timeout=1.0)
    population = hub.populate(USERS, idle_fraction=0.1, seed=9, now=now)
    failed = random_faults(hub, rate=0.05, seed=21)
    with trio.fail_after(150):
        async with open_fake_hub(hub) as api_url:
            config = Config(
                api_token=TOKEN,
                url=api_url,
                timeout=600,
                cull_every=1,  # the smallest interval: the loop's own waits are short deadlines too
                progress_interval=1,
                request_timeout=1,
                concurrency=CONCURRENCY,
                api_page_size=USERS,
            )
            culler = Culler(config)
            async with trio.open_nursery() as nursery:
                await nursery.start(culler.serve)
                marks = []
                full_passes = 0
                for done in range(1, PASSES + 1):
                    restart_idle(hub, population, idle_since)
                    report = await culler.run_pass_now()
                    assert report.ok, report.errors
                    # The loop also starts passes on its own schedule (during the pauses below), and one of those
                    # may take some of the work: nearly every pass, not every one, finds all twenty idle.
                    full_passes += report.servers_stopped == len(population.idle)
                    if done in (WARM_UP, PASSES):
                        culler_hub = culler.statistics().hub
                        await trio.sleep(DRAIN)
                        marks.append((census(), open_fds(), resident_bytes(), culler_hub))
                culler.stop(grace=0)
            (objects_0, fds_0, rss_0, _), (objects_1, fds_1, rss_1, hub_stats) = marks
            assert full_passes >= PASSES - 4
            assert sum(failed.values()) >= PASSES // 2, "faults were injected throughout"
            # A dropped connection that was reused may be sent again by the transport itself, on a new connection
            # (a server closing an idle connection must not cost a failed request): not a hub-level retry.
            assert hub_stats.retries >= failed["503"] + failed["429"]
            assert_flat(objects_0, objects_1, "Culler.serve")
            # Keep-alive connections come and go (dropped ones are replaced): up to the pool's size, both ends.
            assert fds_1 <= fds_0 + 2 * (CONCURRENCY + 2)
            assert rss_1 - rss_0 < 16 * 2**20

            # The one-shot API opens and closes its own client each time: nothing may stay behind either.
            await trio.sleep(DRAIN)
            objects_0, fds_0 = census(), open_fds()
            for _ in range(40):
                restart_idle(hub, population, idle_since)
                report = await run_pass(config)
                assert report.ok, report.errors
            await trio.sleep(DRAIN)
            assert_flat(objects_0, census(), "run_pass")
            assert open_fds() <= fds_0
