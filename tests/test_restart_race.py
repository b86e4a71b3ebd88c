"""The restart race: a server stopped and started again between the listing that judged it and its DELETE.

Measured against FakeHub on trio's autojump clock: slow stops and few workers make the last users' listing
seconds old when their turn comes, and the test restarts one of them in that window. Without the re-read
(``RECHECK_AFTER`` made infinite) the fresh server is culled on the old judgment; with it, it is not, and the
pass says how many users it read again and how many culls that prevented. The cull line's ``judged_started``
lets an oracle tell one from the other.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import datetime, timedelta

import httpx
import pytest
import trio
import trio.testing

import trio_culler._work as work
from trio_culler import Config, PassReport, run_pass
from trio_culler._logging import JsonFormatter
from trio_culler.testing import FakeHub, FakeServer

from .support.strategies import NOW

TOKEN = "race-token"
URL = "http://127.0.0.1:8081/hub/api"
H = timedelta(hours=1)
#: The restart happens this long after the pass began: after the listing, before the victim's turn.
RESTART_AT = 3.0


def racing_hub() -> FakeHub:
    """20 idle users whose stops take a second each; the last one listed (the victim) is restarted."""
    hub = FakeHub(token=TOKEN, clock=lambda: NOW, stop_latency=1.0)
    for i in range(20):
        name = f"u{i:02}" if i < 19 else "victim"
        hub.add_user(name, servers={"": FakeServer("", NOW - 3 * H, NOW - 2 * H)})
    return hub


async def restart_victim(hub: FakeHub, start: float) -> datetime:
    """Stop and start the victim's server, as its user would, RESTART_AT seconds into the pass."""
    await trio.sleep_until(start + RESTART_AT)
    restarted = NOW + timedelta(seconds=RESTART_AT)
    hub.users["victim"].servers[""] = FakeServer("", restarted, restarted)
    return restarted


async def race(hub: FakeHub, cfg: Config) -> tuple[PassReport, datetime]:
    start = trio.current_time()
    restarted: list[datetime] = []
    async with hub.running(), trio.open_nursery() as nursery:

        async def restart() -> None:
            restarted.append(await restart_victim(hub, start))

        nursery.start_soon(restart)
        report = await run_pass(cfg, transport=hub.transport(), now=NOW)
        await hub.wait_stops_done()
    return report, restarted[0]


def config() -> Config:
    # Two workers: the victim, listed last, waits for the others' stops (about ten seconds) before its own.
    return Config(api_token=TOKEN, url=URL, timeout=3600, concurrency=2)


def culls_logged(caplog: pytest.LogCaptureFixture) -> dict[str, dict[str, object]]:
    found = {}
    for record in caplog.records:
        if record.getMessage().startswith("Culling server"):
            fields = json.loads(JsonFormatter().format(record))
            found[str(fields["user"])] = fields
    return found


async def test_without_the_reread_a_restarted_server_is_culled_on_the_old_judgment(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(work, "RECHECK_AFTER", math.inf)
    hub = racing_hub()
    with caplog.at_level(logging.INFO, logger="trio_culler"):
        report, restarted = await race(hub, config())
    # The race, measured: the server started after the listing was stopped.
    assert ("victim", "") in hub.statistics().stop_requests
    assert "victim" not in {user for user, server in hub.users.items() if server.servers}
    assert report.rereads == 0
    # An oracle sees it: the cull line names the start it judged, older than the server it stopped.
    judged = culls_logged(caplog)["victim"]["judged_started"]
    assert judged == "2026-11-25T09:00:00Z"
    assert datetime.fromisoformat(str(judged)) < restarted


async def test_the_reread_keeps_a_server_restarted_since_the_listing(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    hub = racing_hub()
    with caplog.at_level(logging.INFO, logger="trio_culler"):
        report, restarted = await race(hub, config())
    stops = hub.statistics().stop_requests
    assert ("victim", "") not in stops, "the fresh server is kept"
    assert hub.users["victim"].servers[""].started == restarted
    assert len(stops) == 19, "every other idle server is culled"
    assert report.culls_prevented == 1
    # Only the users whose listing was older than the bound were read again: one request more per such cull.
    assert 0 < report.rereads < 20
    assert hub.statistics().requests_by_kind["other"] == report.rereads  # GET /users/{name}
    assert "victim" not in culls_logged(caplog)
    prevented = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Not culling server victim")]
    # Judged again at the time of the re-read (six seconds after the restart), from the fresh model.
    assert prevented == [
        "Not culling server victim: it changed since the listing (started 2026-11-25T09:00:00Z, then "
        "2026-11-25T12:00:03Z; active: inactive for 00:00:06, age 00:00:06)"
    ]
    assert "1 kept" in report.summary()
    # Every cull line names the start it judged, which is the start of the server it stopped.
    assert {fields["judged_started"] for fields in culls_logged(caplog).values()} == {"2026-11-25T09:00:00Z"}


async def test_a_young_listing_costs_no_request_more(autojump_clock: trio.testing.MockClock) -> None:
    """Fast stops: every DELETE follows its listing within the bound, so nobody is read again."""
    hub = FakeHub(token=TOKEN, clock=lambda: NOW)
    for i in range(50):
        hub.add_user(f"u{i:02}", servers={"": FakeServer("", NOW - 3 * H, NOW - 2 * H)})
    async with hub.running():
        report = await run_pass(config(), transport=hub.transport(), now=NOW)
    assert len(hub.statistics().stop_requests) == 50
    assert report.rereads == 0
    assert hub.statistics().requests_by_kind["other"] == 0


async def test_a_server_used_since_the_listing_is_judged_again(autojump_clock: trio.testing.MockClock) -> None:
    hub = racing_hub()

    async def used(request: httpx.Request) -> httpx.Response | None:
        # The victim's user comes back just before the re-read.
        if request.method == "GET" and request.url.path.endswith("/users/victim"):
            hub.users["victim"].servers[""].last_activity = NOW + timedelta(seconds=5)
        return None

    hub.fault = used
    async with hub.running():
        report = await run_pass(config(), transport=hub.transport(), now=NOW)
    assert ("victim", "") not in hub.statistics().stop_requests
    assert report.culls_prevented == 1


async def test_a_user_who_started_a_server_since_the_listing_is_not_deleted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """--cull-users: users without servers are deleted; one who starts a server after the listing is not (a
    real hub would stop that fresh server to delete its user)."""
    hub = FakeHub(token=TOKEN, clock=lambda: NOW, delete_user_latency=1.0)
    for i in range(10):
        name = f"u{i:02}" if i < 9 else "victim"
        hub.add_user(name, created=NOW - 3 * H, last_activity=NOW - 2 * H)
    deletes: list[str] = []

    async def record(request: httpx.Request) -> httpx.Response | None:
        if request.method == "DELETE":
            deletes.append(request.url.path.rsplit("/", 1)[-1])
        return None

    hub.fault = record
    start = trio.current_time()
    async with hub.running(), trio.open_nursery() as nursery:

        async def start_a_server() -> None:
            await trio.sleep_until(start + RESTART_AT)
            hub.users["victim"].servers[""] = FakeServer("", NOW, NOW)

        nursery.start_soon(start_a_server)
        cfg = Config(api_token=TOKEN, url=URL, timeout=3600, concurrency=2, cull_users=True)
        report = await run_pass(cfg, transport=hub.transport(), now=NOW)
    assert "victim" not in deletes
    assert "victim" in hub.users
    assert len(hub.statistics().users_deleted) == 9
    assert report.culls_prevented == 1


async def test_a_listing_that_cannot_be_confirmed_is_not_culled_on(autojump_clock: trio.testing.MockClock) -> None:
    """The re-read fails: the DELETE waits for the next pass, and the pass counts the error."""
    hub = racing_hub()

    async def refuse(request: httpx.Request) -> httpx.Response | None:
        if request.method == "GET" and request.url.path.endswith("/users/victim"):
            return httpx.Response(500)
        return None

    hub.fault = refuse
    async with hub.running():
        cfg = Config(api_token=TOKEN, url=URL, timeout=3600, concurrency=2, max_retries=0)
        report = await run_pass(cfg, transport=hub.transport(), now=NOW)
    assert ("victim", "") not in hub.statistics().stop_requests
    assert [(error.subject, error.kind) for error in report.errors] == [("victim", "status")]
    assert not report.ok


def held_stop(hub: FakeHub, name: str, *, restart: bool) -> list[str]:
    """The first DELETE of ``name``'s server is answered 503 with Retry-After (the hub, or a front, busy), and
    meanwhile its user restarts it (``restart``) or not; returns the methods and paths of what reaches ``name``."""
    seen: list[str] = []

    async def hold(request: httpx.Request) -> httpx.Response | None:
        if f"/users/{name}" not in request.url.path:
            return None
        seen.append(f"{request.method} {request.url.path}")
        if request.method == "DELETE" and seen.count(f"{request.method} {request.url.path}") == 1:
            if restart:
                later = NOW + timedelta(seconds=2)
                hub.users[name].servers[""] = FakeServer("", later, later)
            return httpx.Response(503, headers={"Retry-After": "2"})
        return None

    hub.fault = hold
    return seen


async def test_a_stop_sent_again_after_a_503_first_reads_the_server_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The restart race, provoked as the soak does: the DELETE is held (503, Retry-After) while the user restarts
    the server. The retry would stop the new server; before it, the user is read again and the stop withdrawn."""
    hub = FakeHub(token=TOKEN, clock=lambda: NOW)
    hub.add_user("victim", servers={"": FakeServer("", NOW - 3 * H, NOW - 2 * H)})
    seen = held_stop(hub, "victim", restart=True)
    async with hub.running():
        report = await run_pass(config(), transport=hub.transport(), now=NOW)
    assert seen == ["DELETE /hub/api/users/victim/server", "GET /hub/api/users/victim"]
    assert hub.users["victim"].servers[""].started == NOW + timedelta(seconds=2), "the new server runs"
    assert report.culls_prevented == 1
    assert sum(report.servers_culled.values()) == 0


async def test_a_stop_sent_again_to_an_unchanged_server_goes_ahead(autojump_clock: trio.testing.MockClock) -> None:
    hub = FakeHub(token=TOKEN, clock=lambda: NOW)
    hub.add_user("victim", servers={"": FakeServer("", NOW - 3 * H, NOW - 2 * H)})
    seen = held_stop(hub, "victim", restart=False)
    async with hub.running():
        report = await run_pass(config(), transport=hub.transport(), now=NOW)
    assert seen == [
        "DELETE /hub/api/users/victim/server",
        "GET /hub/api/users/victim",
        "DELETE /hub/api/users/victim/server",
    ]
    assert hub.users["victim"].servers == {}
    assert report.culls_prevented == 0
    assert sum(report.servers_culled.values()) == 1
