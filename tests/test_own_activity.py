"""The server's own word on its activity recovers what the proxy hides.

configurable-http-proxy keeps only the latest request of a route, and the hub folds it in every
``last_activity_interval``: a request of the culler's own (the notice, an inspection) overwrites its user's
activity since the last fold, and the warnings explain the hub's value away as the culler's. The server's own
``last_activity`` (the notice API's state, jupyter_server's ``api/status``), which the culler's requests never
move, brings it back; FakeHub models the proxy (``proxy_records_activity``, ``folds_at_once = False``) and the
server (``hub.use``, ``FakeServer.own_activity``)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from trio_culler._codes import DecisionCode
from trio_culler._explain import run_explain
from trio_culler._inspect import parse_status
from trio_culler._judge import Announced, Judge
from trio_culler._models import Server, User
from trio_culler._notice import ServerState, parse_server_state
from trio_culler.testing import FakeHub, FakeKernel

from .support.decisions import policy
from .support.faults import NOW
from .test_notices import config, idle, make_hub, stops
from .test_notify import Clock, Receiver, at, culler

M = timedelta(minutes=1)


def hidden_by_the_proxy(hub: FakeHub) -> None:
    hub.proxy_records_activity = True
    hub.folds_at_once = False


async def test_activity_the_notice_hid_from_the_hub_spares_the_server_at_its_cull_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """(a) The user works 2 minutes before the warning, after the hub's last fold; the warning's GET and PUT
    overwrite that in the proxy, and the hub only ever shows the PUT's time, which the warnings take for the
    culler's own. The server's state, read before the cull, says when its user was last there."""
    hub = make_hub(ann=idle(50))
    hidden_by_the_proxy(hub)
    clock = Clock()
    receiver = Receiver()
    async with culler(hub, config(), receiver, clock) as run:
        clock.now = NOW - 2 * M
        hub.use("ann")
        await run(NOW)  # the hub still shows 50 minutes idle: warned, cull at +15
        server = hub.users["ann"].servers[""]
        assert server.proxy_activity == NOW, "the proxy keeps the culler's request, the user's is gone"
        hub.fold_activity()
        assert server.last_activity == NOW, "the hub only ever shows the culler's own request"
        for minutes in (5, 10):
            await run(NOW + minutes * M)
        assert stops(hub) == set()
        assert receiver.events() == [("warning", at(15), None)], "the culler's own request is not activity"
        await run(NOW + 15 * M)
    assert stops(hub) == set(), "its user was there 17 minutes ago, with a timeout of an hour"
    assert receiver.events() == [("warning", at(15), None), ("cancelled", at(15), "used")]


async def test_activity_an_inspection_hid_is_read_from_api_status_without_the_extension(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """(b) No extension, --inspect-kernels: the inspection before the warning overwrites in the proxy the
    user's activity of 2 minutes before; api/status, read beside api/kernels, shows it, so there is no warning
    (and no cull). Another user, back after the warning while the hub had not folded it in yet, is seen by the
    inspection before the cull: the warning is cancelled ``used``."""
    kernels = [FakeKernel("k", "idle", NOW - 50 * M)]
    hub = make_hub(ann=idle(50, notices=False, kernels=kernels), bob=idle(50, notices=False, kernels=list(kernels)))
    hidden_by_the_proxy(hub)
    clock = Clock()
    receiver = Receiver()
    async with culler(hub, config(inspect_kernels=True), receiver, clock) as run:
        clock.now = NOW - 2 * M
        hub.use("ann")
        await run(NOW)
        hub.fold_activity()
        assert hub.users["ann"].servers[""].last_activity == NOW, "the hub shows the inspection, not the user"
        assert receiver.events("ann") == []
        assert receiver.events("bob") == [("warning", at(15), None)]
        clock.now = NOW + 12 * M
        hub.use("bob")  # not folded in before the cull's pass
        for minutes in (5, 10, 15, 20):
            await run(NOW + minutes * M)
            hub.fold_activity()
    assert stops(hub) == set()
    assert receiver.events("ann") == []
    assert receiver.events("bob") == [("warning", at(15), None), ("cancelled", at(15), "used")]


def _server(last_activity: datetime, *, started: datetime) -> Server:
    return Server(name="", last_activity=last_activity, started=started, ready=True, url="/user/ann/")


@pytest.mark.parametrize("reported_in", [timedelta(days=3650), timedelta(seconds=1)])
async def test_a_time_reported_from_the_future_buys_no_more_than_now(reported_in: timedelta) -> None:
    """(c) The server's clock is its user's: a last activity after ``now`` counts as ``now``, never later."""
    now = NOW

    async def read_state(user: str, server: Server) -> ServerState:
        return ServerState(None, now + reported_in)

    judge = Judge(read_keep=read_state)
    server = _server(now - 70 * M, started=now - 5 * 60 * M)
    rules = policy(timeout=timedelta(hours=1))
    verdict = await judge.judge(User(name="ann"), server, rules, now, announced=Announced(now - 15 * M, read_keep=True))
    assert verdict.decision.code is DecisionCode.ACTIVE
    assert verdict.reported_at == now
    assert verdict.due is not None
    assert verdict.due.at == now + timedelta(hours=1)
    assert verdict.server == server, "the verdict describes the server as the hub has it"


async def test_no_reported_activity_changes_a_max_age_cull() -> None:
    """(c) --max-age is a hard lifetime: the server's word is not even asked."""
    now = NOW
    asked: list[str] = []

    async def read_state(user: str, server: Server) -> ServerState:
        asked.append(user)
        return ServerState(None, now)

    judge = Judge(read_keep=read_state)
    server = _server(now - 5 * M, started=now - 9 * 60 * M)
    rules = policy(timeout=timedelta(hours=1), max_age=timedelta(hours=8))
    verdict = await judge.judge(User(name="ann"), server, rules, now, announced=Announced(now - 15 * M, read_keep=True))
    assert verdict.decision.code is DecisionCode.MAX_AGE
    assert verdict.acts
    assert asked == []


GARBAGE: list[Any] = [
    "yesterday",
    "2026-12-06T12:00:00",  # no zone
    "2026-12-06T12:00:00Z" + " " * 40,  # too long
    12345,
    None,
    ["2026-12-06T12:00:00Z"],
    {"$date": "2026-12-06T12:00:00Z"},
]


@pytest.mark.parametrize("value", GARBAGE)
def test_a_reported_time_that_cannot_be_read_is_unread(value: Any) -> None:
    state = parse_server_state(json.dumps({"notice": None, "keep": None, "last_activity": value}).encode())
    assert (state.keep, state.last_activity, state.activity_unread) == (None, None, True)
    assert parse_status(json.dumps({"last_activity": value}).encode()) is None


def test_reported_times_that_can_be_read() -> None:
    state = parse_server_state(b'{"notice": null, "keep": null, "last_activity": "2026-12-06T11:59:30.250000Z"}')
    assert state.last_activity is not None
    assert state.last_activity == datetime(2026, 12, 6, 11, 59, 30, 250000, tzinfo=UTC)
    assert state.last_activity.utcoffset() == timedelta(0)
    assert not state.activity_unread
    assert parse_server_state(b'{"notice": null, "keep": null}').activity_unread, "an older extension: unread"
    moment = parse_status(b'{"started": "x", "last_activity": "2026-12-06T13:59:30+02:00", "kernels": 1}')
    assert moment == state.last_activity.replace(microsecond=0)
    assert parse_status(b"[]") is None
    assert parse_status(b'{"last_activity": "2026-12-06T11:59:30Z", "pad": "' + b"x" * 5000 + b'"}') is None


async def test_a_garbage_last_activity_is_counted_and_the_cull_goes_ahead(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """(c) Never acted on, counted as a notice failure, never logged, never quoted."""
    marker = "2026-12-06T12:00:00 then never"

    async def garbage(request: httpx.Request) -> httpx.Response | None:
        if request.method == "GET" and request.url.path.endswith("/notice"):
            return httpx.Response(200, json={"notice": None, "keep": None, "last_activity": marker})
        return None

    hub = make_hub(ann=idle(50))
    receiver = Receiver()
    async with culler(hub, config(), receiver) as run:
        await run(NOW)
        hub.fault = garbage
        report = await run(NOW + 15 * M)
    assert stops(hub) == {"ann"}
    assert receiver.events() == [("warning", at(15), None), ("culled", at(15), None)]
    assert report.notices_failed == 1
    assert marker not in caplog.text


async def test_a_server_without_the_extension_receives_no_request_with_a_body(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """(d) configurable-http-proxy counts a request with a body as activity even when answered 404: the culler
    asks with a bodyless GET first, and PUTs only where the extension answered."""
    hub = make_hub(plain=idle(50, notices=False), ann=idle(50))
    hub.proxy_records_activity = True
    seen: list[tuple[str, str, int]] = []

    async def record(request: httpx.Request) -> httpx.Response | None:
        if "/user/" in request.url.path:
            seen.append((request.url.path.split("/")[2], request.method, len(await request.aread())))
        return None

    hub.fault = record
    plain = hub.users["plain"].servers[""]
    receiver = Receiver()
    async with culler(hub, config(), receiver) as run:
        for minutes in (0, 5, 15):
            await run(NOW + minutes * M)
    assert stops(hub) == {"ann", "plain"}
    assert [entry for entry in seen if entry[0] == "plain"] == [("plain", "GET", 0)], "once: then remembered"
    assert plain.proxy_activity is None, "nothing the proxy counts ever reached it"
    assert [method for user, method, size in seen if user == "ann" and size] == ["PUT"]


async def test_an_unreadable_api_status_is_counted_and_the_inspection_goes_on(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """(c) Through inspection: a status that cannot be read fails nothing (the kernels were read), is counted as
    ``status_unreadable``, never logged, never quoted; the server is warned and culled as before."""
    marker = "tomorrow, honestly"

    async def garbage(request: httpx.Request) -> httpx.Response | None:
        if request.url.path.endswith("/api/status"):
            return httpx.Response(200, json={"last_activity": marker})
        return None

    kernels = [FakeKernel("k", "idle", NOW - 50 * M)]
    hub = make_hub(ann=idle(50, notices=False, kernels=kernels))
    hub.fault = garbage
    receiver = Receiver()
    async with culler(hub, config(inspect_kernels=True), receiver) as run:
        reports = [await run(NOW + minutes * M) for minutes in (0, 15)]
    assert stops(hub) == {"ann"}
    assert receiver.events() == [("warning", at(15), None), ("culled", at(15), None)]
    assert [dict(report.inspection_failures) for report in reports] == [{"status_unreadable": 1}] * 2
    assert [report.servers_inspected for report in reports] == [1, 1]
    assert all("1 servers inspected (0 could not be)" in report.summary() for report in reports), "inspected"
    assert marker not in caplog.text


async def test_explain_shows_the_servers_own_word_as_the_pass_takes_it(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """--explain judges as a pass does: the activity the proxy hid, read from the server's state, is a signal
    of its own, and the decision and the cull time follow from it."""
    hub = make_hub(ann=idle(50))
    hidden_by_the_proxy(hub)
    clock = Clock()
    cfg = config(state_file=str(tmp_path / "state.json"))
    async with culler(hub, cfg, Receiver(), clock) as run:
        clock.now = NOW - 2 * M
        hub.use("ann")
        await run(NOW)
    hub.fold_activity()
    async with hub.running():
        text, data = io.StringIO(), io.StringIO()
        assert await run_explain(cfg, "ann", out=text, transport=hub.transport(), now=NOW + 10 * M) == 0
        await run_explain(cfg, "ann", out=data, json_format=True, transport=hub.transport(), now=NOW + 10 * M)
    assert "    idle:     00:12:00 by the server (last activity 2026-11-25T11:58:00Z)\n" in text.getvalue()
    assert "    now:      keep: active: inactive for 00:12:00" in text.getvalue()
    [server] = json.loads(data.getvalue())["servers"]
    assert server["signals"]["server"] == {"last_activity": "2026-11-25T11:58:00Z", "idle_seconds": 720}


@pytest.mark.parametrize("folds_at_once", [True, False])
async def test_a_warning_judged_with_the_servers_own_word_keeps_its_cull_time(
    autojump_clock: trio.testing.MockClock, folds_at_once: bool
) -> None:
    """The inspection before a warning reads the server's own last activity (later than the hub's): the warning
    remembers it as what it was judged with, so the passes after it (which do not read the server again before
    the cull) find the same cull time rather than cancelling and warning again."""
    kernels = [FakeKernel("k", "idle", NOW - 50 * M)]
    hub = make_hub(ann=idle(50, notices=False, kernels=kernels))
    hub.users["ann"].servers[""].own_activity = NOW - 45 * M  # not folded into the hub's yet
    # The inspection shows as the hub's last_activity at once, or the hub shows nothing newer until the cull.
    hub.proxy_records_activity = True
    hub.folds_at_once = folds_at_once
    receiver = Receiver()
    async with culler(hub, config(inspect_kernels=True), receiver) as run:
        for minutes in (0, 5, 10, 15):
            await run(NOW + minutes * M)
    assert receiver.events() == [("warning", at(15), None), ("culled", at(15), None)]
    assert stops(hub) == {"ann"}
