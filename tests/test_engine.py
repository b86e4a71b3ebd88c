"""The engine against the simulated hub, on trio's autojump clock: bound, streaming, completeness, outcomes."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
import trio
import trio.testing

import trio_culler._judge as judge
from trio_culler import Decision, Server, decide_server, run_pass
from trio_culler.testing import FakeHub, FakeServer, Population

from .support import faults
from .support.faults import NOW, TOKEN, make_hub, rewrite_pages
from .support.faults import make_config as config
from .support.passes import cull

Fault = Callable[[httpx.Request], Awaitable[httpx.Response | None]]


def assert_exact(hub: FakeHub, population: Population) -> None:
    """Every idle server stopped, none asked about twice, no active one asked about."""
    faults.assert_exact(hub, population, asked_once=True)


async def test_a_pass_stops_exactly_the_idle_servers(autojump_clock: trio.testing.MockClock) -> None:
    hub, population = make_hub(300, idle=0.4)
    report = await cull(hub, config())
    assert_exact(hub, population)
    assert report.ok
    assert report.users_seen == 300
    assert report.servers_stopped == len(population.idle) == 120
    assert report.servers_culled == {"idle": 120}


@pytest.mark.parametrize("concurrency", [1, 3, 10])
async def test_requests_in_flight_never_exceed_concurrency(
    autojump_clock: trio.testing.MockClock, concurrency: int
) -> None:
    hub, population = make_hub(400, idle=0.5, stop_latency=0.05, list_latency=0.02, named_fraction=0.2)
    await cull(hub, config(concurrency=concurrency, api_page_size=20))
    stats = hub.statistics()
    assert stats.max_in_flight == concurrency, "the bound is reached but never exceeded"
    assert_exact(hub, population)


async def test_culling_starts_before_the_last_page(autojump_clock: trio.testing.MockClock) -> None:
    hub, population = make_hub(1000, idle=0.5, list_latency=0.05, stop_latency=0.05)
    await cull(hub, config(api_page_size=50))
    stats = hub.statistics()
    assert stats.first_delete_at is not None
    assert stats.last_list_at is not None
    assert stats.first_delete_at < stats.last_list_at
    # The first stop comes right after the first page, not after twenty.
    pages_before_first_stop = [p for p in stats.page_requests if p.at < stats.first_delete_at]
    assert len(pages_before_first_stop) == 1
    assert_exact(hub, population)


async def test_the_pager_does_not_run_ahead_of_the_workers(autojump_clock: trio.testing.MockClock) -> None:
    # Stops take 1 s and 10 workers handle 10 users at a time: with back-pressure the pager can only be a
    # page or so ahead of them, so memory holds pages in flight, not the user list.
    hub, population = make_hub(2000, idle=1.0, stop_latency=1.0)
    seen_pages: list[int] = []

    async def record(request: httpx.Request) -> httpx.Response | None:
        if request.method == "DELETE":
            seen_pages.append(len(hub.statistics().page_requests))
        return None

    hub.fault = record
    await cull(hub, config(api_page_size=50, concurrency=10))
    assert_exact(hub, population)
    total_pages = len(hub.statistics().page_requests)
    assert total_pages == 41  # 40 pages, and the first one read again at the end
    for stops_done, pages in enumerate(seen_pages):
        # pages requested when stop number `stops_done` began: never more than needed for the users handed
        # out so far (stops_done + 10 in workers + 1 in the channel), plus the held first page and one more
        assert pages <= (stops_done + 11) // 50 + 3


@pytest.mark.parametrize(("users", "page"), [(100, 10), (500, 50), (137, 7)])
async def test_one_pass_is_complete_although_stops_shift_offsets(
    autojump_clock: trio.testing.MockClock, users: int, page: int
) -> None:
    hub, population = make_hub(users, idle=1.0)
    report = await cull(hub, config(api_page_size=page))
    assert report.servers_stopped == users
    assert_exact(hub, population)
    assert report.duplicates == 0


@pytest.mark.parametrize(
    ("list_latency", "stop_latency"), [(0.5, 0.0), (0.0, 0.5), (0.2, 0.2), (0.0, 0.0), (1.0, 0.01)]
)
async def test_complete_whichever_finishes_first_stops_or_pages(
    autojump_clock: trio.testing.MockClock, list_latency: float, stop_latency: float
) -> None:
    # Slow pages and instant stops: the first page's users are gone before the second page is read, and the
    # users behind them slide into the first page's offsets, which only the final re-read of page 0 finds.
    hub, population = make_hub(
        230, idle=1.0, list_latency=list_latency, stop_latency=stop_latency, default_page_size=20
    )
    report = await cull(hub, config(concurrency=5))
    assert report.servers_stopped == 230
    assert report.users_seen == 230
    assert_exact(hub, population)


async def test_complete_with_a_mix_and_small_pages(autojump_clock: trio.testing.MockClock) -> None:
    hub, population = make_hub(600, idle=0.7, named_fraction=0.3, stop_latency=0.01)
    await cull(hub, config(api_page_size=10, concurrency=7))
    assert_exact(hub, population)


async def test_concurrency_zero_means_no_bound(autojump_clock: trio.testing.MockClock) -> None:
    # 60 idle servers whose stops take 1 s each: with no bound they overlap (a bound of 1, or of the default
    # 10, would keep max_in_flight at that number).
    hub, population = make_hub(60, idle=1.0, stop_latency=1.0)
    await cull(hub, config(concurrency=0))
    assert_exact(hub, population)
    assert hub.statistics().max_in_flight > 10


async def test_the_arbiter_gets_a_whole_timeout_as_an_int(autojump_clock: trio.testing.MockClock) -> None:
    limits: list[object] = []

    def hook(inactive: timedelta, inactive_limit: float, server: dict[str, object]) -> bool:
        limits.append(inactive_limit)
        return False

    hub, _population = make_hub(3, idle=1.0)
    await cull(hub, config(timeout=600.0, cull_arbiter_hook=hook))
    assert limits
    assert all(type(limit) is int and limit == 600 for limit in limits), limits
    limits.clear()
    hub, _population = make_hub(3, idle=1.0)
    await cull(hub, config(timeout=600.5, cull_arbiter_hook=hook))
    assert limits
    assert all(limit == 600.5 for limit in limits), limits


async def test_requests_are_probe_pages_and_one_delete_per_cull(autojump_clock: trio.testing.MockClock) -> None:
    hub, population = make_hub(1000, idle=0.2)
    await cull(hub, config(api_page_size=100))
    kinds = hub.statistics().requests_by_kind
    assert kinds["version"] == 1
    assert kinds["whoami"] == 1  # the probe asks what the token may do, once
    assert kinds["list"] == 11  # ten pages and the first one again (see _pager)
    assert kinds["stop"] == len(population.idle)
    assert sum(kinds.values()) == 2 + 11 + len(population.idle)


async def test_page_size_is_sent_as_limit_and_the_ready_filter_is_used(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub, _ = make_hub(120, idle=0.5)
    await cull(hub, config(api_page_size=25))
    pages = hub.statistics().page_requests
    assert {p.limit for p in pages} == {25}
    assert {p.state for p in pages} == {"ready"}
    assert all(p.paginated for p in pages)
    assert [p.offset for p in pages] == [0, 100, 75, 50, 25, 0]


async def test_hub_default_page_size_when_unset(autojump_clock: trio.testing.MockClock) -> None:
    hub, population = make_hub(120, idle=0.5, default_page_size=30)
    await cull(hub, config())
    assert {p.limit for p in hub.statistics().page_requests} == {30}
    assert_exact(hub, population)


async def test_cull_users_lists_inactive_users_first(autojump_clock: trio.testing.MockClock) -> None:
    hub, population = make_hub(50, idle=0.5)
    hub.add_user("gone-long-ago", created=NOW - timedelta(days=9), last_activity=NOW - timedelta(days=8))
    hub.add_user("just-arrived", created=NOW - timedelta(seconds=5), last_activity=NOW - timedelta(seconds=5))
    report = await cull(hub, config(cull_users=True))
    states = [p.state for p in hub.statistics().page_requests]
    assert states[0] == "inactive"
    assert states[-1] == "ready"
    assert "gone-long-ago" not in hub.users
    assert "just-arrived" in hub.users
    assert set(hub.users) >= {name for name, _ in population.active}
    assert report.users_deleted == len(population.idle_users) + 1


async def test_admins_spared(autojump_clock: trio.testing.MockClock) -> None:
    hub = FakeHub(token=TOKEN)
    old = NOW - timedelta(days=3)
    hub.add_user("root", admin=True, created=old, last_activity=old)
    hub.add_user("alice", created=old, last_activity=old)
    await cull(hub, config(cull_users=True, cull_admin_users=False))
    assert set(hub.users) == {"root"}


async def test_slow_stop_keeps_its_user(autojump_clock: trio.testing.MockClock) -> None:
    hub = FakeHub(token=TOKEN, slow_stop_timeout=10)
    old = NOW - timedelta(hours=5)
    hub.add_user("slow", created=old, last_activity=old, servers={"": FakeServer("", old, old, stop_latency=30)})
    hub.add_user("quick", created=old, last_activity=old, servers={"": FakeServer("", old, old)})
    async with hub.running():
        report = await run_pass(config(cull_users=True), transport=hub.transport(), now=NOW)
        assert "slow" in hub.users, "a 202 means still stopping: the user must not be deleted this pass"
        assert "quick" not in hub.users
        await hub.wait_stops_done()
    assert report.servers_pending == 1
    assert report.users_deleted == 1
    assert report.ok
    assert hub.users["slow"].servers == {}


async def test_404_on_stop_is_not_an_error(autojump_clock: trio.testing.MockClock) -> None:
    hub, _population = make_hub(20, idle=1.0)

    async def vanish(request: httpx.Request) -> httpx.Response | None:
        if request.method == "DELETE" and request.url.path.endswith("/user-05/server"):
            return httpx.Response(404, json={"status": 404, "message": "No such user"})
        return None

    hub.fault = vanish
    report = await cull(hub, config())
    assert report.ok
    assert report.servers_stopped == 20
    assert report.error_count == 0


def refuse_stops(hub: FakeHub, user: str, status: int, message: str) -> list[str]:
    """Answer every DELETE about ``user`` with ``status``; returns the list of those requests, as they come."""
    refused: list[str] = []

    async def refuse(request: httpx.Request) -> httpx.Response | None:
        if request.method == "DELETE" and f"/{user}/" in request.url.path:
            refused.append(request.url.path)
            return httpx.Response(status, json={"status": status, "message": message})
        return None

    hub.fault = refuse
    return refused


async def test_a_failing_user_does_not_stop_the_pass(autojump_clock: trio.testing.MockClock) -> None:
    hub, _population = make_hub(30, idle=1.0)
    attempts = refuse_stops(hub, "user-07", 500, "boom")
    report = await cull(hub, config(max_retries=3))
    assert len(attempts) == 4, "the first attempt and three retries"
    assert report.errors_by_kind == {"status": 1}
    assert report.errors[0].subject == "user-07"
    assert "500" in report.errors[0].message
    assert not report.ok
    assert report.servers_stopped == 29
    assert "" in hub.users["user-07"].servers


async def test_400_is_recorded_not_retried(autojump_clock: trio.testing.MockClock) -> None:
    hub, _ = make_hub(5, idle=1.0)
    calls = refuse_stops(hub, "user-2", 400, "Named servers are not enabled")
    report = await cull(hub, config())
    assert len(calls) == 1
    assert report.errors_by_kind == {"status": 1}
    assert "Named servers are not enabled" in report.errors[0].message


async def test_dry_run_sends_no_delete(autojump_clock: trio.testing.MockClock) -> None:
    hub, population = make_hub(100, idle=0.5)
    report = await cull(hub, config(dry_run=True, cull_users=True))
    stats = hub.statistics()
    assert stats.stop_requests == {}
    assert stats.requests_by_kind["delete_user"] == 0
    assert sum(report.servers_culled.values()) == len(population.idle)
    assert report.users_culled == len(population.idle_users)
    assert report.users_deleted == 0


async def test_old_hub_without_pagination(autojump_clock: trio.testing.MockClock) -> None:
    hub, population = make_hub(250, idle=0.5, paginate=False, version="1.5.0")
    await cull(hub, config())
    pages = hub.statistics().page_requests
    assert len(pages) == 1
    assert pages[0].state == "ready"
    assert_exact(hub, population)


async def test_hub_before_the_state_filter(autojump_clock: trio.testing.MockClock) -> None:
    hub, population = make_hub(80, idle=0.5, paginate=False, version="1.1.0")
    await cull(hub, config())
    assert [p.state for p in hub.statistics().page_requests] == [None]
    assert_exact(hub, population)


@pytest.mark.parametrize("version", ["5.3.0.dev0+g1234", "unknown", "6", "v4.1"])
async def test_unusual_version_strings_do_not_crash(autojump_clock: trio.testing.MockClock, version: str) -> None:
    hub, population = make_hub(40, idle=0.5, version=version)
    report = await cull(hub, config())
    assert report.hub_version == version
    assert_exact(hub, population)


async def test_wrong_token_aborts_with_the_scopes_needed(autojump_clock: trio.testing.MockClock) -> None:
    hub, _ = make_hub(10, idle=1.0)
    report = await cull(hub, config(api_token="wrong", cull_users=True))
    assert report.aborted is not None
    for scope in ("list:users", "read:users:activity", "read:servers", "delete:servers", "delete:users", "read:users"):
        assert scope in report.aborted
    assert "wrong" not in report.aborted
    assert hub.statistics().stop_requests == {}


async def test_missing_delete_scope_aborts_the_pass(autojump_clock: trio.testing.MockClock) -> None:
    hub, _ = make_hub(200, idle=1.0)

    async def forbid_deletes(request: httpx.Request) -> httpx.Response | None:
        if request.method == "DELETE":
            message = "Action is not authorized with current scopes; requires any of [delete:servers]"
            return httpx.Response(403, json={"status": 403, "message": message})
        return None

    hub.fault = forbid_deletes
    report = await cull(hub, config(api_page_size=20))
    assert report.aborted is not None
    assert "delete:servers" in report.aborted
    assert report.errors_by_kind == {"auth": 1}
    # The pass stops at the first refusal instead of failing 200 times.
    assert sum(hub.statistics().stop_requests.values()) <= 10


async def test_hostile_names_act_on_exactly_that_user(autojump_clock: trio.testing.MockClock) -> None:
    hub = FakeHub(token=TOKEN)
    old, fresh = NOW - timedelta(hours=3), NOW - timedelta(seconds=10)
    hostile = ["u#x", "u?x=1", "u;x", "u@example.org", "u+tag", "u.dot", "u x", "u%41", "ü-user", "u/slash", "u%"]
    hub.add_user("u", created=old, last_activity=fresh, servers={"": FakeServer("", old, fresh)})
    hub.add_user("decoy", created=old, last_activity=fresh, servers={"": FakeServer("", old, fresh)})
    for name in hostile:
        hub.add_user(
            name,
            created=old,
            last_activity=old,
            servers={"": FakeServer("", old, old), "n#?; x": FakeServer("n#?; x", old, old)},
        )
    report = await cull(hub, config(cull_users=True, remove_named_servers=True))
    assert report.ok
    assert set(hub.users) == {"u", "decoy"}
    assert "" in hub.users["u"].servers
    stats = hub.statistics()
    assert set(stats.stop_requests) == {(n, s) for n in hostile for s in ("", "n#?; x")}
    assert set(stats.users_deleted) == set(hostile)


async def test_arbiter_hook_sync_and_async(autojump_clock: trio.testing.MockClock) -> None:
    hub = FakeHub(token=TOKEN)
    old = NOW - timedelta(hours=3)
    for name in ("keep-me", "cull-me"):
        hub.add_user(name, created=old, last_activity=old, servers={"": FakeServer("", old, old)})
    calls: list[tuple[float, float, str]] = []

    def sync_hook(inactive: timedelta, inactive_limit: float, server: dict[str, object]) -> bool:
        calls.append((inactive.total_seconds(), inactive_limit, str(server["url"])))
        return "keep-me" not in str(server["url"])

    await cull(hub, config(cull_arbiter_hook=sync_hook))
    assert set(hub.statistics().stop_requests) == {("cull-me", "")}
    assert sorted(calls) == [(10800.0, 600, "/user/cull-me/"), (10800.0, 600, "/user/keep-me/")]

    hub2 = FakeHub(token=TOKEN)
    hub2.add_user("x", created=old, last_activity=old, servers={"": FakeServer("", old, old)})

    async def async_hook(inactive: timedelta, inactive_limit: float, server: dict[str, object]) -> bool:
        await trio.sleep(0.1)
        return False

    report = await cull(hub2, config(cull_arbiter_hook=async_hook, max_age=0))
    assert hub2.statistics().stop_requests == {}
    assert report.ok


async def test_a_failing_arbiter_keeps_the_server(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    hub, _ = make_hub(5, idle=1.0)

    def broken(**_kwargs: object) -> bool:
        raise RuntimeError("hook bug")

    with caplog.at_level(logging.INFO, logger="trio_culler"):
        report = await cull(hub, config(cull_arbiter_hook=broken))
    assert hub.statistics().stop_requests == {}
    # Counted as the hook's errors (the pass is not ok); the traceback is logged once, not once per server.
    assert report.errors_by_kind == {"hook": 5}
    assert not report.ok
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(failures) == 1
    assert failures[0].exc_info is not None


@pytest.mark.parametrize("answer", ["yes", None, 1, [True]])
async def test_a_hook_answering_garbage_keeps_the_server(
    autojump_clock: trio.testing.MockClock, answer: object
) -> None:
    """Only True culls: an answer that is not a bool cannot vouch for a cull, and is an error."""
    hub, _ = make_hub(3, idle=1.0)

    async def garbage(**_kwargs: object) -> object:
        return answer

    report = await cull(hub, config(cull_arbiter_hook=garbage))
    assert hub.statistics().stop_requests == {}
    assert report.errors_by_kind == {"hook": 3}
    assert all(error.kind == "hook" and "not True or False" in error.message for error in report.errors)


async def test_unreadable_users_are_skipped_and_named(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    hub, _population = make_hub(30, idle=1.0, default_page_size=10)

    def corrupt(body: dict[str, Any]) -> None:
        for item in body["items"]:
            if item["name"] == "user-03":
                item["servers"][""]["last_activity"] = "yesterday-ish"
            if item["name"] == "user-14":
                item["admin"] = "no"
            if item["name"] == "user-25":
                item["servers"] = ["not", "a", "dict"]
        body["items"].append(42)

    rewrite_pages(hub, corrupt)
    report = await cull(hub, config())
    stopped = {name for name, _ in hub.statistics().stop_requests}
    assert stopped == {f"user-{i:02d}" for i in range(30)} - {"user-03", "user-14", "user-25"}
    assert report.skipped == 6  # three bad users, and a non-object item in each of three pages
    warnings = "\n".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    for name in ("user-03", "user-14", "user-25"):
        assert name in warnings


async def test_users_listed_twice_are_handled_once(autojump_clock: trio.testing.MockClock) -> None:
    hub, population = make_hub(40, idle=1.0, default_page_size=10)

    def repeat(body: dict[str, Any]) -> None:
        body["items"] = body["items"] + body["items"][:3]

    rewrite_pages(hub, repeat)
    report = await cull(hub, config())
    assert report.duplicates > 0
    assert all(count == 1 for count in hub.statistics().stop_requests.values())
    assert_exact(hub, population)


def count_decisions(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count decide_server() calls per server (``user/name``), wherever a pass makes them (the judge)."""
    calls: Counter[str] = Counter()
    real = decide_server

    def counting(server: Server, **kwargs: Any) -> Decision:
        calls[server.model["full_name"]] += 1
        return real(server, **kwargs)

    monkeypatch.setattr(judge, "decide_server", counting)
    return calls


@pytest.mark.parametrize("hook", [False, True], ids=["pager decides", "worker asks the arbiter hook"])
async def test_each_server_is_decided_once(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch, hook: bool
) -> None:
    hub, population = make_hub(200, idle=0.3, named_fraction=0.25)
    calls = count_decisions(monkeypatch)
    changes: dict[str, Any] = {"api_page_size": 1000}  # one page: every server is listed exactly once
    if hook:
        changes["cull_arbiter_hook"] = lambda inactive, inactive_limit, server: (
            inactive.total_seconds() >= inactive_limit
        )
    report = await cull(hub, config(**changes))
    assert_exact(hub, population)
    servers = population.idle | population.active
    assert calls == Counter({f"{user}/{server}": 1 for user, server in servers})
    assert report.servers_stopped == len(population.idle)


async def test_a_culled_server_is_decided_once_across_pages(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pages overlap (the walk re-reads), so a kept server may be decided again on a re-read; a culled one is
    # decided in the pager and acted on with that decision, not decided again by the worker.
    hub, population = make_hub(300, idle=0.4)
    calls = count_decisions(monkeypatch)
    await cull(hub, config(api_page_size=25))
    assert_exact(hub, population)
    assert {calls[f"{user}/{server}"] for user, server in population.idle} == {1}
