"""--inspect-kernels when a server cannot be inspected: kept when its answer cannot be had or read (an error of the
pass), decided from the hub's data when nothing serves there; one line per pass per kind; --max-age still culls."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

import httpx
import pytest
import trio
import trio.testing

from trio_culler import run_pass
from trio_culler._judge import DECIDED_FROM_HUB_DATA
from trio_culler._metrics import INSPECTION_FAILURE_KINDS
from trio_culler.testing import FakeHub, open_fake_hub

from .support.passes import cull
from .test_engine_kernels import NOW, TOKEN, busy, config, make_hub, server, stopped

H = timedelta(hours=1)
Answer = Callable[[], Awaitable[httpx.Response]]


def answering(response: httpx.Response) -> Answer:
    async def answer() -> httpx.Response:
        return response

    return answer


def raising(error: Exception) -> Answer:
    async def answer() -> httpx.Response:
        raise error

    return answer


async def hanging() -> httpx.Response:
    await trio.sleep_forever()
    raise AssertionError("unreachable")


def refused() -> Answer:
    # What the h11 transport raises for a refused connection: httpx's ConnectError from trio's OSError, from the
    # ConnectionRefusedError of each address tried.
    cause = OSError("all attempts to connect to 127.0.0.1:9 failed")
    cause.__cause__ = ConnectionRefusedError(111, "Connection refused")
    error = httpx.ConnectError("cannot connect to 127.0.0.1:9")
    error.__cause__ = cause
    return raising(error)


#: What a server (or the proxy in front of it) may answer that cannot be read: the server is kept this pass.
KEPT = {
    "not JSON": (answering(httpx.Response(200, content=b"<html>not json</html>")), "unreadable"),
    "not a list": (answering(httpx.Response(200, json={"kernels": []})), "unreadable"),
    "a wrong type": (
        answering(httpx.Response(200, json=[{"id": "k", "execution_state": 1, "last_activity": None}])),
        "unreadable",
    ),
    "a bad timestamp": (
        answering(httpx.Response(200, json=[{"id": "k", "execution_state": "busy", "last_activity": "yesterday"}])),
        "unreadable",
    ),
    "a broken connection": (raising(httpx.ReadError("connection lost")), "unreadable"),
    "garbage HTTP": (raising(httpx.RemoteProtocolError("illegal status line")), "unreadable"),
    "403 to the credential": (answering(httpx.Response(403)), "forbidden"),
    "a redirect to the login page": (
        answering(httpx.Response(302, headers={"Location": "/hub/login"})),
        "forbidden",
    ),
    "401": (answering(httpx.Response(401)), "status"),
    "400": (answering(httpx.Response(400)), "status"),
    "500, after the retries": (answering(httpx.Response(500)), "status"),
    "504 from the proxy": (answering(httpx.Response(504)), "status"),
    "no answer in time": (hanging, "timeout"),
}

#: What says that nothing serves there: the server is decided from the hub's data, as a dead process should be.
HUB_DATA = {
    "connection refused": (refused(), "unreachable"),
    "the proxy's 502": (answering(httpx.Response(502)), "unreachable"),
    "the proxy's 503": (answering(httpx.Response(503)), "unreachable"),
    "the hub's 424 (no route, not running)": (answering(httpx.Response(424)), "unreachable"),
    "404 (not a jupyter_server)": (answering(httpx.Response(404, text="Not Found")), "not_found"),
}


def failing_hub(answer: Answer) -> FakeHub:
    """Two servers with a busy kernel whose answers fail: one the hub's data culls, one it keeps."""
    hub = make_hub()
    hub.add_user("idle", servers={"": server(hub_idle=2 * H, kernels=busy(2 * H))})
    hub.add_user("active", servers={"": server(hub_idle=timedelta(seconds=5), kernels=busy(2 * H))})

    async def fault(request: httpx.Request) -> httpx.Response | None:
        return await answer() if "/api/kernels" in request.url.path else None

    hub.fault = fault
    return hub


@pytest.mark.parametrize(("answer", "kind"), KEPT.values(), ids=KEPT.keys())
async def test_a_server_whose_answer_cannot_be_read_is_kept_and_is_an_error(
    autojump_clock: trio.testing.MockClock, answer: Answer, kind: str
) -> None:
    hub = failing_hub(answer)
    report = await cull(hub, config(request_timeout=20, max_retries=1))
    assert stopped(hub) == set(), "a failure to look never culls"
    assert report.inspection_failures == {kind: 1}
    assert report.errors_by_kind == {"inspection": 1}
    assert not report.ok, "the pass says it could not judge a server"
    assert kind not in DECIDED_FROM_HUB_DATA


@pytest.mark.parametrize(("answer", "kind"), HUB_DATA.values(), ids=HUB_DATA.keys())
async def test_a_server_that_is_not_serving_is_decided_from_the_hubs_data(
    autojump_clock: trio.testing.MockClock, answer: Answer, kind: str
) -> None:
    hub = failing_hub(answer)
    report = await cull(hub, config(max_retries=1))
    assert stopped(hub) == {"idle"}
    assert report.inspection_failures == {kind: 1}
    assert report.ok, "not an error: nothing was there to read"
    assert kind in DECIDED_FROM_HUB_DATA


def test_every_failure_kind_has_its_metric_label() -> None:
    kinds = {kind for _answer, kind in [*KEPT.values(), *HUB_DATA.values()]} | set(DECIDED_FROM_HUB_DATA)
    assert kinds <= set(INSPECTION_FAILURE_KINDS)


async def test_max_age_still_culls_a_server_whose_answer_cannot_be_read(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = failing_hub(answering(httpx.Response(200, content=b"garbage")))
    hub.add_user("old", servers={"": server(hub_idle=timedelta(seconds=5), kernels=busy(2 * H))})
    hub.users["old"].servers[""].started = NOW - 30 * H
    report = await cull(hub, config(max_age=24 * 3600))
    assert stopped(hub) == {"old"}
    assert report.servers_culled == {"max_age": 1}
    # The kept server's forecast is its max-age (its idleness cannot be judged while it cannot be read).
    report = await cull(failing_hub(answering(httpx.Response(200, content=b"garbage"))), config(max_age=6 * 3600))
    assert {(f.user, f.limit, f.cull_at) for f in report.upcoming} == {
        ("idle", "max_age", NOW + H),
        ("active", "idle", NOW + H - timedelta(seconds=5)),  # not inspected: the hub's data
    }


async def test_one_line_per_pass_per_kind(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    hub = make_hub()
    for i in range(10):
        hub.add_user(f"refuses{i}", servers={"": server(hub_idle=2 * H, kernels=busy(2 * H))})
        hub.add_user(f"garbage{i}", servers={"": server(hub_idle=2 * H, kernels=busy(2 * H))})

    async def fault(request: httpx.Request) -> httpx.Response | None:
        if "/api/kernels" not in request.url.path:
            return None
        return httpx.Response(403) if "/refuses" in request.url.path else httpx.Response(200, content=b"x")

    hub.fault = fault
    with caplog.at_level(logging.INFO, logger="trio_culler"):
        report = await cull(hub, config())
    assert report.inspection_failures == {"forbidden": 10, "unreadable": 10}
    assert report.errors_by_kind == {"inspection": 20}
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2, warnings
    assert all("Cannot inspect server" in line and "keeping it" in line for line in warnings)
    assert stopped(hub) == set()


async def test_without_any_address_a_server_is_decided_from_the_hubs_data_said_once(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """No --public-url and no full_url from the hub: no address, so the hub's data decides, once per pass."""
    hub = make_hub()
    for i in range(5):
        hub.add_user(f"u{i}", servers={"": server(hub_idle=2 * H, kernels=busy(2 * H))})
    with caplog.at_level(logging.INFO, logger="trio_culler"):
        report = await cull(hub, config(public_url=None))
    assert len(stopped(hub)) == 5
    assert report.inspection_failures == {"no_url": 5}
    assert report.ok
    assert hub.statistics().requests_by_kind["kernels"] == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "no full_url" in warnings[0]
    assert "from the hub's data" in warnings[0]


async def test_full_url_alone_is_enough(autojump_clock: trio.testing.MockClock) -> None:
    """A hub with a public_url gives every server its full_url: no --public-url needed, decided per server."""
    hub = make_hub(public_url="http://proxy.test")
    hub.add_user("computing", servers={"": server(hub_idle=2 * H, kernels=busy(2 * H))})
    report = await cull(hub, config(public_url=None))
    assert stopped(hub) == set()
    assert report.servers_inspected == 1


async def test_a_refused_connection_on_a_real_socket_is_a_server_not_serving() -> None:
    """Over the real h11 transport: a --public-url whose port nobody listens on is a refused connection, and
    the server is decided from the hub's data; a refused connection is not mistaken for an unreadable answer."""
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]  # bound, never listening: connections to it are refused
        hub = FakeHub(token=TOKEN, clock=lambda: NOW)
        hub.add_user("idle", servers={"": server(hub_idle=2 * H, kernels=busy(2 * H))})
        async with open_fake_hub(hub) as api_url:
            cfg = config(url=api_url, public_url=f"http://127.0.0.1:{closed_port}", max_retries=0)
            report = await run_pass(cfg, now=NOW)
    assert report.inspection_failures == {"unreachable": 1}
    assert set(hub.statistics().stop_requests) == {("idle", "")}
    assert report.ok
