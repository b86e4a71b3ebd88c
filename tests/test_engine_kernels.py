"""--inspect-kernels in whole passes against FakeHub's fake single-user servers, on trio's autojump clock."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing

from trio_culler import Config
from trio_culler._logging import JsonFormatter
from trio_culler.testing import FakeHub, FakeKernel, FakeServer, FakeTerminal

from .support.passes import cull

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TOKEN = "kernels-test-token"
URL = "http://127.0.0.1:8081/hub/api"
PUBLIC = "http://proxy.test"
H = timedelta(hours=1)
M = timedelta(minutes=1)


def config(**changes: Any) -> Config:
    base = Config(api_token=TOKEN, url=URL, timeout=3600, inspect_kernels=True, public_url=PUBLIC)
    return attrs.evolve(base, **changes)


def server(
    name: str = "",
    *,
    hub_idle: timedelta,
    kernels: list[FakeKernel] | None = None,
    terminals: list[FakeTerminal] | None = None,
) -> FakeServer:
    return FakeServer(
        name,
        started=NOW - 5 * H,
        last_activity=NOW - hub_idle,
        kernels=[] if kernels is None else kernels,
        terminals=[] if terminals is None else terminals,
    )


def busy(since: timedelta) -> list[FakeKernel]:
    return [FakeKernel("k-busy", "busy", NOW - since)]


def idle(since: timedelta) -> list[FakeKernel]:
    return [FakeKernel("k-idle", "idle", NOW - since)]


def make_hub(**options: Any) -> FakeHub:
    return FakeHub(token=TOKEN, clock=lambda: NOW, **options)


def stopped(hub: FakeHub) -> set[str]:
    return {user for user, _server in hub.statistics().stop_requests}


def scenario() -> FakeHub:
    hub = make_hub()
    hub.add_user(
        "computing",
        servers={"": server(hub_idle=70 * 60 * timedelta(seconds=1), kernels=busy(70 * 60 * timedelta(seconds=1)))},
    )
    hub.add_user("idle-kernel", servers={"": server(hub_idle=2 * H, kernels=idle(2 * H))})
    hub.add_user("no-kernel", servers={"": server(hub_idle=2 * H)})
    hub.add_user("active", servers={"": server(hub_idle=timedelta(seconds=30), kernels=idle(2 * H))})
    return hub


async def test_a_busy_kernel_spares_its_server_only_with_inspect_kernels(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = scenario()
    report = await cull(hub, config())
    assert stopped(hub) == {"idle-kernel", "no-kernel"}
    assert report.ok
    # Only the candidates are asked, once each (terminals have no busy state: only --kernel-activity-only
    # needs them); the active server is not.
    assert report.servers_inspected == 3
    assert hub.statistics().requests_by_kind["kernels"] == 3
    assert hub.statistics().requests_by_kind["terminals"] == 0
    # Each asked with a token of its own user's, minted for it (tests/test_credentials.py has the details), at
    # api/kernels and at api/status (its own last activity, which the proxy's record can hide).
    assert hub.statistics().server_credentials == {"own": 6}
    assert hub.statistics().tokens_minted == 3

    hub = scenario()
    report = await cull(hub, config(inspect_kernels=False))
    assert stopped(hub) == {"computing", "idle-kernel", "no-kernel"}
    assert report.servers_inspected == 0
    assert hub.statistics().requests_by_kind["kernels"] == 0


async def test_the_reason_and_json_fields_name_the_signal(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    hub = scenario()
    with caplog.at_level(logging.INFO, logger="trio_culler"):
        await cull(hub, config())
    messages = {record.getMessage() for record in caplog.records}
    assert "Not culling server computing (kernel busy for 01:10:00; global options)" in messages
    assert "Culling server idle-kernel (inactive for 02:00:00, no kernel busy)" in messages
    spared = next(r for r in caplog.records if r.getMessage().startswith("Not culling server computing"))
    fields = json.loads(JsonFormatter().format(spared))
    assert fields["signal"] == "kernel_busy"
    assert fields["busy_seconds"] == 4200
    assert fields["rule"] == "kernel_busy"
    assert fields["hub_inactive_seconds"] == 4200


async def test_max_busy_ends_the_protection(autojump_clock: trio.testing.MockClock) -> None:
    hub = make_hub()
    hub.add_user("short", servers={"": server(hub_idle=2 * H, kernels=busy(2 * H))})
    hub.add_user("long", servers={"": server(hub_idle=4 * H, kernels=busy(4 * H))})
    report = await cull(hub, config(max_busy=3 * 3600))
    assert stopped(hub) == {"long"}
    assert report.servers_culled == {"busy_expired": 1}


async def test_max_age_still_culls_a_busy_server(autojump_clock: trio.testing.MockClock) -> None:
    hub = make_hub()
    hub.add_user("old", servers={"": server(hub_idle=2 * H, kernels=busy(2 * H))})
    report = await cull(hub, config(max_age=4 * 3600))
    assert stopped(hub) == {"old"}
    assert report.servers_inspected == 0, "max-age culls whatever the kernels say: no need to ask"


def polled_scenario() -> FakeHub:
    hub = make_hub()
    # A browser tab keeps the hub's activity fresh; nothing ran for two hours.
    hub.add_user("tab", servers={"": server(hub_idle=timedelta(seconds=30), kernels=idle(2 * H))})
    hub.add_user(
        "terminal",
        servers={
            "": server(hub_idle=timedelta(seconds=30), terminals=[FakeTerminal("1", NOW - 10 * timedelta(minutes=1))])
        },
    )
    hub.add_user("fresh-kernel", servers={"": server(hub_idle=3 * H, kernels=idle(timedelta(minutes=5)))})
    return hub


async def test_kernel_activity_only_culls_what_a_browser_tab_keeps_alive(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    hub = polled_scenario()
    with caplog.at_level(logging.INFO, logger="trio_culler"):
        report = await cull(hub, config(kernel_activity_only=True))
    assert stopped(hub) == {"tab"}
    assert report.servers_inspected == 3, "every ready server is inspected"
    assert hub.statistics().requests_by_kind["terminals"] == 3
    assert "Culling server tab (kernels idle for 02:00:00, hub activity 00:00:30)" in {
        r.getMessage() for r in caplog.records
    }
    assert report.servers_culled == {"kernels_idle": 1}

    # Measured from the hub, the tab keeps its server; the server the hub sees as idle is culled though its
    # kernel ran five minutes ago (the hub's activity is what the operator chose to trust).
    hub = polled_scenario()
    await cull(hub, config())
    assert stopped(hub) == {"fresh-kernel"}


async def test_with_kernel_activity_only_the_hook_is_asked_once_about_the_kernels_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The hook judges the idle time the rules use: the kernels' with --kernel-activity-only, the hub's for a
    server whose kernels cannot be read; one call per server either way."""
    asked: list[tuple[str, float]] = []

    def hook(inactive: timedelta, inactive_limit: int, server: dict[str, Any], user: dict[str, Any]) -> bool:
        asked.append((user["name"], inactive.total_seconds()))
        return inactive.total_seconds() >= inactive_limit

    hub = polled_scenario()
    rstudio = FakeServer("", started=NOW - 5 * H, last_activity=NOW - timedelta(seconds=20), kernels=None)
    hub.add_user("rstudio", servers={"": rstudio})
    report = await cull(hub, config(kernel_activity_only=True, cull_arbiter_hook=hook))
    assert sorted(name for name, _ in asked) == ["fresh-kernel", "rstudio", "tab", "terminal"]
    seconds = dict(asked)
    assert seconds["tab"] == pytest.approx(2 * 3600)  # its kernel's idle time, not the tab's 30 s
    assert seconds["terminal"] == pytest.approx(10 * 60)
    assert seconds["fresh-kernel"] == pytest.approx(5 * 60)
    assert seconds["rstudio"] == pytest.approx(20)  # not inspectable: the hub's clock, as without the option
    assert stopped(hub) == {"tab"}
    assert report.inspection_failures == {"not_found": 1}


async def test_what_comes_next_follows_the_kernels(autojump_clock: trio.testing.MockClock) -> None:
    """The status page's forecast uses what the kernels said: with --kernel-activity-only the kernels' clock,
    and a busy kernel's protection ending at --max-busy; the hub's data for the servers not inspected."""
    report = await cull(polled_scenario(), config(kernel_activity_only=True))
    assert {(f.user, f.limit, f.cull_at) for f in report.upcoming} == {
        ("terminal", "kernels_idle", NOW + 50 * timedelta(minutes=1)),
        ("fresh-kernel", "kernels_idle", NOW + 55 * timedelta(minutes=1)),  # the hub's data: due three hours ago
    }
    assert report.upcoming_due == {"kernels_idle": 2}

    report = await cull(scenario(), config(max_busy=2 * 3600))
    assert {(f.user, f.limit, f.cull_at) for f in report.upcoming} == {
        ("computing", "busy_expired", NOW + 50 * timedelta(minutes=1)),  # its cell started 70 minutes ago
        ("active", "idle", NOW + H - timedelta(seconds=30)),  # not inspected: the hub's activity
    }
    assert report.upcoming_due == {"busy_expired": 1, "idle": 1}


async def test_inspection_shares_the_concurrency_bound(autojump_clock: trio.testing.MockClock) -> None:
    hub = make_hub(server_latency=0.05, stop_latency=0.05)
    for i in range(200):
        kernels = busy(2 * H) if i % 2 else idle(2 * H)
        hub.add_user(f"u{i:03}", servers={"": server(hub_idle=2 * H, kernels=kernels)})
    report = await cull(hub, config(concurrency=7))
    assert hub.statistics().max_in_flight == 7
    assert len(stopped(hub)) == 100
    assert report.servers_inspected == 200


async def test_transient_failures_of_a_server_are_retried(autojump_clock: trio.testing.MockClock) -> None:
    hub = make_hub()
    hub.add_user("flaky", servers={"": server(hub_idle=2 * H, kernels=busy(2 * H))})
    failures = 2

    async def fault(request: httpx.Request) -> httpx.Response | None:
        nonlocal failures
        if "/api/kernels" in request.url.path and failures:
            failures -= 1
            return httpx.Response(503)
        return None

    hub.fault = fault
    report = await cull(hub, config())
    assert stopped(hub) == set(), "the third attempt read the busy kernel"
    assert report.servers_inspected == 1
    assert hub.statistics().requests_by_kind["kernels"] == 3


async def test_hostile_names_reach_exactly_their_own_server(autojump_clock: trio.testing.MockClock) -> None:
    hub = make_hub()
    names = ["decoy?x=1", "..", ".", "a b", "ü#frag", "x%2Fy", "semi;colon"]
    for name in names:
        hub.add_user(
            name, servers={"": server(hub_idle=2 * H, kernels=busy(2 * H)), "lab/..": server("lab/..", hub_idle=2 * H)}
        )
    # Users whose names the hostile ones could be confused with, all idle and with idle kernels: asking the
    # wrong server would read an idle kernel and cull a busy user's server.
    for name in ["decoy", "a", "x", "semi", "user", "lab"]:
        hub.add_user(name, servers={"": server(hub_idle=2 * H, kernels=idle(2 * H))})
    seen: list[str] = []

    async def fault(request: httpx.Request) -> httpx.Response | None:
        if request.url.path.startswith("/user/"):
            seen.append(request.url.raw_path.decode())
        return None

    hub.fault = fault
    report = await cull(hub, config())
    stops = set(hub.statistics().stop_requests)
    for name in names:
        assert (name, "") not in stops, f"{name!r}: its busy kernel was not read"
        assert (name, "lab/..") in stops
    assert report.inspection_failures == {}
    assert all("/../" not in path and "/./" not in path for path in seen)


async def test_full_url_wins_when_the_hub_has_a_public_url(autojump_clock: trio.testing.MockClock) -> None:
    hub = make_hub(public_url="http://public.example:8000")
    hub.add_user("alice", servers={"": server(hub_idle=2 * H, kernels=busy(2 * H))})
    hosts: list[str] = []

    async def fault(request: httpx.Request) -> httpx.Response | None:
        if request.url.path.startswith("/user/"):
            hosts.append(f"{request.url.host}:{request.url.port}")
        return None

    hub.fault = fault
    await cull(hub, config(public_url="http://fallback.example"))
    assert hosts == ["public.example:8000"] * 2, "api/kernels and api/status"
    assert stopped(hub) == set()


async def test_rules_and_kernel_signals_together(autojump_clock: trio.testing.MockClock) -> None:
    hub = make_hub()
    hub.add_user(
        "gpu-busy", servers={"": server(hub_idle=20 * timedelta(minutes=1), kernels=busy(20 * timedelta(minutes=1)))}
    )
    hub.add_user(
        "gpu-idle", servers={"": server(hub_idle=20 * timedelta(minutes=1), kernels=idle(20 * timedelta(minutes=1)))}
    )
    hub.add_user("vip", servers={"": server(hub_idle=5 * H, kernels=idle(5 * H))})
    rules = [{"users": ["gpu-*"], "timeout": 900}, {"users": ["vip"], "cull": False}]
    report = await cull(hub, config(rules=rules))
    # The rule's shorter timeout makes both candidates; the busy kernel still spares its server; an exempt
    # server is not even asked.
    assert stopped(hub) == {"gpu-idle"}
    assert report.servers_inspected == 2


async def test_only_a_cull_the_kernels_allow_is_announced(autojump_clock: trio.testing.MockClock) -> None:
    """With --warn-before, a server about to enter its warning window is inspected first: a busy kernel that
    will spare it means no warning (the judgment warns of what it will cull, nothing else); an idle one is
    warned; with --max-busy, the end of the protection is what is announced."""
    from .test_notify import Receiver, passes

    hub = make_hub()
    hub.add_user("computing", servers={"": server(hub_idle=55 * M, kernels=busy(55 * M))})
    hub.add_user("resting", servers={"": server(hub_idle=55 * M, kernels=idle(55 * M))})
    receiver = Receiver()
    cfg = config(warn_before=600, warn_url="http://127.0.0.1:9/hook")
    reports = await passes(hub, cfg, [NOW], receiver)
    # Due at 12:05 by its rule, warned at 12:00 with --warn-before=600: culled at 12:10, never sooner.
    assert [(post["user"], post["cull_at"]) for post in receiver.posts] == [("resting", "2026-11-25T12:10:00Z")]
    assert reports[0].servers_inspected == 2

    hub = make_hub()
    hub.add_user("computing", servers={"": server(hub_idle=55 * M, kernels=busy(55 * M))})
    receiver = Receiver()
    await passes(hub, config(warn_before=600, warn_url="http://127.0.0.1:9/hook", max_busy=3600), [NOW], receiver)
    assert [(post["user"], post["cull_at"], post["reason"]) for post in receiver.posts] == [
        ("computing", "2026-11-25T12:10:00Z", "busy_expired")
    ]
