"""Fault injection: what a pass and the service do when the hub or the network misbehaves.

Retries (every transient failure, for pages, stops, removals and user deletions; the backoff and its bounds),
requests that keep failing, pages lost for good, lost answers to DELETEs that the hub did carry out, a
10,000-user hub failing one request in ten, malformed answers, a hub that is down or refuses the token while the
service runs, and real loopback faults an in-memory transport cannot show (TCP resets, refused ports, answers
that trickle in, hostile names percent-encoded on the wire).

In-memory tests run on trio's autojump clock, so every backoff and deadline is exact and costs no real time.
"""

from __future__ import annotations

import logging
import random
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import pairwise
from typing import Any, Literal

import attrs
import httpx
import pytest
import trio
import trio.testing

from trio_culler import Config, Culler, HubError, PassReport, run_pass
from trio_culler.testing import FakeHub, FakeServer, open_fake_hub

from .support.faults import (
    NOW,
    SCOPES,
    TOKEN,
    Failure,
    Fault,
    assert_exact,
    hub_answer,
    inflict,
    is_nested,
    is_page,
    lost_page_hub,
    make_config,
    make_hub,
    rewrite_pages,
)
from .support.net import RelayAction, dead_port, open_relay
from .support.passes import cull

OLD = NOW - timedelta(hours=5)
FRESH = NOW - timedelta(seconds=30)
REQUEST_TIMEOUT = 5.0
#: The waits before retries 1..5 with the defaults: 0.5 s doubling, each drawn from [ceiling / 2, ceiling].
BACKOFF_CEILINGS = [0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0, 15.0]

Kind = Literal["page", "stop", "remove", "delete_user"]
KINDS: tuple[Kind, ...] = ("page", "stop", "remove", "delete_user")


def idle_server(name: str = "") -> FakeServer:
    return FakeServer(name, started=OLD, last_activity=OLD)


def target_hub(kind: Kind) -> tuple[FakeHub, Config, Callable[[httpx.Request], bool], Callable[[FakeHub], bool]]:
    """A hub where the pass makes exactly one request of ``kind`` about user ``target``, a config that makes it,
    the predicate that recognises that request, and a check that its action took effect."""
    hub = FakeHub(token=TOKEN, clock=lambda: NOW)
    cfg = make_config(request_timeout=REQUEST_TIMEOUT)
    for other in ("before", "after"):
        hub.add_user(other, created=OLD, last_activity=OLD, servers={"": idle_server()})
    if kind == "page":
        hub.add_user("target", created=OLD, last_activity=OLD, servers={"": idle_server()})
        return hub, cfg, is_page, lambda h: h.users["target"].servers == {}
    if kind == "stop":
        hub.add_user("target", created=OLD, last_activity=OLD, servers={"": idle_server()})
        path = "/hub/api/users/target/server"
        return hub, cfg, _delete_of(path), lambda h: h.users["target"].servers == {}
    if kind == "remove":
        active = FakeServer("", started=OLD, last_activity=FRESH)
        hub.add_user("target", created=OLD, last_activity=FRESH, servers={"": active, "nb": idle_server("nb")})
        cfg = attrs.evolve(cfg, remove_named_servers=True)
        path = "/hub/api/users/target/servers/nb"

        def removed(h: FakeHub) -> bool:
            user = h.users["target"]
            return "nb" not in user.servers and "nb" not in user.stopped_named and "" in user.servers

        return hub, cfg, _delete_of(path), removed
    hub.add_user("target", created=OLD, last_activity=OLD)
    cfg = attrs.evolve(cfg, cull_users=True)
    return hub, cfg, _delete_of("/hub/api/users/target"), lambda h: "target" not in h.users


def _delete_of(path: str) -> Callable[[httpx.Request], bool]:
    return lambda request: request.method == "DELETE" and request.url.raw_path == path.encode()


def failing(predicate: Callable[[httpx.Request], bool], failure: Failure, times: int, attempts: list[float]) -> Fault:
    """Fail the first ``times`` requests that match ``predicate``; record when each match arrived."""

    async def fault(request: httpx.Request) -> httpx.Response | None:
        if is_nested(request) or not predicate(request):
            return None
        attempts.append(trio.current_time())
        if len(attempts) <= times:
            return await inflict(failure, request, request_timeout=REQUEST_TIMEOUT)
        return None

    return fault


def waits_between(attempts: list[float], failure: Failure) -> list[float]:
    """The backoff before each retry: the gap between attempts, less the deadline a timed-out attempt used."""
    spent = REQUEST_TIMEOUT if failure is Failure.TIMEOUT else 0.0
    return [later - earlier - spent for earlier, later in pairwise(attempts)]


def assert_backoff(waits: list[float], failure: Failure) -> None:
    for retry, wait in enumerate(waits):
        if failure.retry_after is not None:
            assert wait == pytest.approx(failure.retry_after), "Retry-After is what the hub asked for"
        else:
            ceiling = BACKOFF_CEILINGS[retry]
            assert ceiling / 2 - 1e-6 <= wait <= ceiling + 1e-6, f"retry {retry + 1} waited {wait}"


# ------------------------------------------------------------------------------------------ retries


@pytest.mark.parametrize("failure", list(Failure), ids=[f.value for f in Failure])
@pytest.mark.parametrize("kind", KINDS)
async def test_transient_failures_are_retried_with_backoff(
    autojump_clock: trio.testing.MockClock, kind: Kind, failure: Failure
) -> None:
    hub, cfg, predicate, done = target_hub(kind)
    attempts: list[float] = []
    hub.fault = failing(predicate, failure, 3, attempts)
    report = await cull(hub, cfg)
    assert len(attempts) == 4, "three failures, then the retry that succeeds"
    assert done(hub)
    assert report.ok, report.errors
    assert_backoff(waits_between(attempts, failure), failure)
    assert len(set(hub.statistics().stops_completed)) == len(hub.statistics().stops_completed)


@pytest.mark.parametrize("failure", [Failure.S503, Failure.REFUSED, Failure.TIMEOUT, Failure.S429_RETRY_AFTER])
@pytest.mark.parametrize("kind", ["stop", "remove", "delete_user"])
async def test_a_request_that_keeps_failing_is_recorded_and_the_pass_goes_on(
    autojump_clock: trio.testing.MockClock, kind: Kind, failure: Failure
) -> None:
    hub, cfg, predicate, done = target_hub(kind)
    attempts: list[float] = []
    hub.fault = failing(predicate, failure, 1000, attempts)
    started = trio.current_time()
    report = await cull(hub, cfg)
    assert len(attempts) == cfg.max_retries + 1
    assert not done(hub)
    subject = "target/nb" if kind == "remove" else "target"
    assert [(e.subject, e.kind) for e in report.errors] == [(subject, failure.error_kind)]
    assert report.aborted is None
    for other in ("before", "after"):
        assert other not in hub.users or hub.users[other].servers == {}, "the others were handled"
    # The backoff stays inside the pass, and is bounded: at most the capped waits plus the deadlines spent.
    assert started <= attempts[0]
    assert attempts[-1] <= started + report.duration
    per_wait = failure.retry_after if failure.retry_after is not None else max(BACKOFF_CEILINGS[:5])
    spent = REQUEST_TIMEOUT if failure is Failure.TIMEOUT else 0.0
    assert report.duration <= cfg.max_retries * per_wait + (cfg.max_retries + 1) * spent + 1


@pytest.mark.parametrize(
    ("header", "expected"),
    [("3600", (60.0, 60.0)), ("0", (0.0, 0.0)), ("2.5", (2.5, 2.5)), ("soon", (0.25, 0.5)), ("-4", (0.25, 0.5))],
)
@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_is_honoured_capped_and_ignored_when_unreadable(
    autojump_clock: trio.testing.MockClock, status: int, header: str, expected: tuple[float, float]
) -> None:
    hub, cfg, predicate, done = target_hub("stop")
    attempts: list[float] = []

    async def fault(request: httpx.Request) -> httpx.Response | None:
        if not predicate(request):
            return None
        attempts.append(trio.current_time())
        if len(attempts) == 1:
            return httpx.Response(status, headers={"Retry-After": header}, json={"message": "busy"})
        return None

    hub.fault = fault
    report = await cull(hub, cfg)
    assert report.ok
    assert done(hub)
    low, high = expected
    assert low - 1e-6 <= attempts[1] - attempts[0] <= high + 1e-6


async def test_backoff_is_jittered_and_capped(autojump_clock: trio.testing.MockClock) -> None:
    # Twenty stops fail together, three times each: their retries must spread out, not hit the hub in lockstep.
    hub, population = make_hub(20, idle=1.0)
    arrivals: dict[str, list[float]] = {}

    async def fault(request: httpx.Request) -> httpx.Response | None:
        if request.method != "DELETE":
            return None
        times = arrivals.setdefault(request.url.path, [])
        times.append(trio.current_time())
        return httpx.Response(503, json={"message": "down"}) if len(times) <= 3 else None

    hub.fault = fault
    report = await cull(hub, make_config(concurrency=20))
    assert report.ok
    assert_exact(hub, population)
    for retry in range(3):
        waits = [times[retry + 1] - times[retry] for times in arrivals.values()]
        ceiling = BACKOFF_CEILINGS[retry]
        assert all(ceiling / 2 - 1e-6 <= wait <= ceiling + 1e-6 for wait in waits)
        assert len({round(wait, 6) for wait in waits}) >= 15, "retries are spread by jitter"

    # And the exponential growth stops at the cap: 15 s, however many retries are allowed.
    hub, cfg, predicate, _done = target_hub("stop")
    attempts: list[float] = []
    hub.fault = failing(predicate, Failure.S500, 1000, attempts)
    await cull(hub, attrs.evolve(cfg, max_retries=8))
    waits = waits_between(attempts, Failure.S500)
    assert len(waits) == 8
    assert_backoff(waits, Failure.S500)
    assert all(7.5 - 1e-6 <= wait <= 15 + 1e-6 for wait in waits[5:])


@pytest.mark.parametrize("how", ["answer lost", "answer too late"])
async def test_a_delete_the_hub_carried_out_is_not_done_twice(autojump_clock: trio.testing.MockClock, how: str) -> None:
    # The hub stops the server (or deletes the user), then the answer never arrives: the retry must find the
    # work done (204 for a stopped server, 404 for a deleted user), count it once and report no error.
    hub, population = make_hub(40, idle=0.5, named_fraction=0.3)
    old_user = "nobody-home"
    hub.add_user(old_user, created=OLD, last_activity=OLD)
    seen: Counter[str] = Counter()

    async def fault(request: httpx.Request) -> httpx.Response | None:
        if is_nested(request) or request.method != "DELETE":
            return None
        seen[request.url.path] += 1
        if seen[request.url.path] > 1:
            return None
        await hub_answer(hub, request)
        if how == "answer lost":
            raise httpx.ReadError("[Errno 104] Connection reset by peer", request=request)
        await trio.sleep(REQUEST_TIMEOUT * 10)
        raise AssertionError("the request outlived its deadline")

    hub.fault = fault
    report = await cull(hub, make_config(cull_users=True, request_timeout=REQUEST_TIMEOUT))
    assert report.ok, report.errors
    assert_exact(hub, population)
    stats = hub.statistics()
    assert len(stats.users_deleted) == len(set(stats.users_deleted))
    assert set(stats.users_deleted) == set(population.idle_users) | {old_user}
    assert report.servers_stopped == len(population.idle)
    assert report.users_deleted == len(population.idle_users) + 1


async def test_ten_thousand_users_with_one_request_in_ten_failing(autojump_clock: trio.testing.MockClock) -> None:
    hub, population = make_hub(10_000, idle=0.3, seed=11, named_fraction=0.05)
    mix: list[Failure | str] = [*Failure, "answer lost"]
    attempts: Counter[str] = Counter()
    failed: Counter[str] = Counter()

    async def fault(request: httpx.Request) -> httpx.Response | None:
        if is_nested(request):
            return None
        key = f"{request.method} {request.url}"
        attempt = attempts[key]
        attempts[key] += 1
        # Decided by the request and its attempt number, not by arrival order (which trio may shuffle), so the
        # run is reproducible; no request fails more than three times, well inside the five retries.
        draw = random.Random(f"10k:{key}:{attempt}")
        if attempt >= 3 or draw.random() >= 0.1:
            return None
        what = draw.choice(mix)
        failed[str(what if isinstance(what, str) else what.value)] += 1
        if what == "answer lost":
            await hub_answer(hub, request)
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
        assert isinstance(what, Failure)
        return await inflict(what, request, request_timeout=REQUEST_TIMEOUT)

    hub.fault = fault
    report = await cull(hub, make_config(request_timeout=REQUEST_TIMEOUT))
    total = sum(attempts.values())
    assert 0.08 <= sum(failed.values()) / total <= 0.12, "about one request in ten failed"
    assert set(failed) == {str(f.value) for f in Failure} | {"answer lost"}, "every kind of failure happened"
    assert report.ok, report.errors[:5]
    assert report.users_seen == 10_000
    assert report.servers_stopped == len(population.idle)
    assert_exact(hub, population)


# ------------------------------------------------------------------------------------------ lost pages


@pytest.mark.parametrize("failure", [Failure.S503, Failure.RESET, Failure.TIMEOUT])
@pytest.mark.parametrize("lost_offset", [0, 10])
async def test_a_page_lost_for_good_costs_only_its_own_users(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture, failure: Failure, lost_offset: int
) -> None:
    hub, _population, on_lost_page, after_it = lost_page_hub()
    attempts: list[float] = []
    hub.fault = failing(
        lambda r: is_page(r) and r.url.params.get("offset") == str(lost_offset), failure, 1000, attempts
    )
    cfg = make_config(api_page_size=10, request_timeout=REQUEST_TIMEOUT)
    report = await cull(hub, cfg)
    assert len(attempts) == cfg.max_retries + 1
    stopped = {name for name, _ in hub.statistics().stop_requests}
    if lost_offset == 0:
        # The first page is the one that tells how many there are: without it the pager cannot know which
        # other offsets exist, so that listing is lost for this pass (and reported).
        assert stopped == set(), "without the first page the listing's total is unknown"
    else:
        # Any later page costs only itself.
        assert stopped == after_it, "everyone on the other pages was handled, no one on the lost one"
        assert not on_lost_page & stopped
    assert report.aborted is None
    assert report.pages_failed == 1
    subject = f"page state=ready offset={lost_offset}"
    assert [(e.subject, e.kind) for e in report.errors] == [(subject, failure.error_kind)]
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(f"offset={lost_offset}" in message for message in logged)


# ------------------------------------------------------------------------------------------ malformed answers

PAGE_GARBAGE: dict[str, Callable[[], httpx.Response]] = {
    "html": lambda: httpx.Response(200, text="<html>502 Bad Gateway</html>", headers={"content-type": "text/html"}),
    "truncated json": lambda: httpx.Response(200, content=b'{"items": [{"name": "user-1'),
    "json string": lambda: httpx.Response(200, json="users"),
    "json null": lambda: httpx.Response(200, json=None),
    "items not a list": lambda: httpx.Response(200, json={"items": "user-10", "_pagination": {}}),
    "no _pagination": lambda: httpx.Response(200, json={"items": []}),
    "total not a number": lambda: httpx.Response(
        200, json={"items": [], "_pagination": {"offset": 10, "limit": 10, "total": "30", "next": None}}
    ),
    "empty body": lambda: httpx.Response(200, content=b""),
    "not utf-8": lambda: httpx.Response(200, content=b'{"items": ["\xff\xfe"]}'),
    "bad gzip": lambda: httpx.Response(200, content=b"not gzip at all", headers={"content-encoding": "gzip"}),
    "nested a million deep": lambda: httpx.Response(200, content=b"[" * 1_000_000 + b"]" * 1_000_000),
}


@pytest.mark.parametrize("garbage", list(PAGE_GARBAGE))
async def test_an_unreadable_page_is_reported_and_the_pass_goes_on(
    autojump_clock: trio.testing.MockClock, garbage: str
) -> None:
    hub, _population, _on_lost_page, after_it = lost_page_hub()

    async def fault(request: httpx.Request) -> httpx.Response | None:
        if is_page(request) and request.url.params.get("offset") == "10":
            return PAGE_GARBAGE[garbage]()
        return None

    hub.fault = fault
    report = await cull(hub, make_config(api_page_size=10))
    stopped = {name for name, _ in hub.statistics().stop_requests}
    # The unreadable page costs exactly its own ten users; nothing of it is acted on.
    assert stopped == after_it
    assert report.aborted is None
    assert report.pages_failed == 1
    assert [(e.subject, e.kind) for e in report.errors] == [("page state=ready offset=10", "protocol")]


VERSION_GARBAGE: dict[str, Callable[[], httpx.Response]] = {
    "html": lambda: httpx.Response(200, text="<html>hello</html>"),
    "no version key": lambda: httpx.Response(200, json={"versión": "5"}),
    "version not a string": lambda: httpx.Response(200, json={"version": 5}),
    "a list": lambda: httpx.Response(200, json=["5.2.1"]),
    "bad gzip": lambda: httpx.Response(200, content=b"\x1f\x8b garbage", headers={"content-encoding": "gzip"}),
}


@pytest.mark.parametrize("garbage", list(VERSION_GARBAGE))
async def test_an_unreadable_version_aborts_the_pass_without_acting(
    autojump_clock: trio.testing.MockClock, garbage: str
) -> None:
    hub, _ = make_hub(5, idle=1.0)

    async def fault(request: httpx.Request) -> httpx.Response | None:
        return VERSION_GARBAGE[garbage]() if request.url.path.endswith("/api/") else None

    hub.fault = fault
    report = await cull(hub, make_config())
    assert report.aborted is not None
    assert report.errors_by_kind == {"protocol": 1}
    assert hub.statistics().stop_requests == {}


def _set(path: tuple[str, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(user: dict[str, Any]) -> None:
        place = user
        for key in path[:-1]:
            place = place[key]
        place[path[-1]] = value

    return edit


def _drop(path: tuple[str, ...]) -> Callable[[dict[str, Any]], None]:
    def edit(user: dict[str, Any]) -> None:
        place = user
        for key in path[:-1]:
            place = place[key]
        del place[path[-1]]

    return edit


#: Ways one user's model can be unreadable, and the label the warning must name.
USER_DAMAGE: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "activity not a timestamp": (_set(("servers", "", "last_activity"), "yesterday-ish"), "target"),
    "activity impossible date": (_set(("servers", "", "last_activity"), "2025-13-45T25:61:00Z"), "target"),
    "activity empty string": (_set(("servers", "", "last_activity"), ""), "target"),
    "activity a number": (_set(("servers", "", "last_activity"), 1735689600), "target"),
    "started not a timestamp": (_set(("servers", "", "started"), "the other day"), "target"),
    "user created not a timestamp": (_set(("created",), "long ago"), "target"),
    "user activity a list": (_set(("last_activity",), ["2025-01-01T00:00:00Z"]), "target"),
    "admin a string": (_set(("admin",), "false"), "target"),
    "servers a list": (_set(("servers",), ["", "nb"]), "target"),
    "server a string": (_set(("servers", ""), "running"), "target"),
    "pending a number": (_set(("servers", "", "pending"), 5), "target"),
    "ready a string": (_set(("servers", "", "ready"), "true"), "target"),
    "name a number": (_set(("name",), 12345), "item 1 of the page at offset 0"),
    "name missing": (_drop(("name",)), "item 1 of the page at offset 0"),
}


@pytest.mark.parametrize("damage", list(USER_DAMAGE))
async def test_an_unreadable_user_is_skipped_with_a_warning_naming_it(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    hub = FakeHub(token=TOKEN, clock=lambda: NOW)
    for name in ("before", "target", "after"):
        hub.add_user(name, created=OLD, last_activity=OLD, servers={"": idle_server()})
    edit, label = USER_DAMAGE[damage]

    def corrupt(body: dict[str, Any]) -> None:
        for item in body["items"]:
            if item["name"] == "target":
                edit(item)
                item["surprise"] = {"new": "field"}

    rewrite_pages(hub, corrupt)
    report = await cull(hub, make_config(cull_users=True))
    stats = hub.statistics()
    assert "target" in hub.users, "never culled on unreadable data"
    assert "" in hub.users["target"].servers
    assert not any(path[0] == "target" for path in stats.stop_requests)
    assert {"before", "after"}.isdisjoint(hub.users), "everyone else was handled (stopped, then deleted)"
    assert report.skipped == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(label in message for message in warnings), warnings


async def test_unknown_keys_everywhere_change_nothing(autojump_clock: trio.testing.MockClock) -> None:
    hub, population = make_hub(60, idle=0.5, named_fraction=0.3)

    def decorate(body: dict[str, Any]) -> None:
        body["_links"] = {"self": "somewhere"}
        body["_pagination"]["cursor"] = "abc"
        for item in body["items"]:
            item["favourite_colour"] = "teal"
            item["servers_v2"] = [1, 2, 3]
            for server in item["servers"].values():
                server["gpu"] = {"count": 1}

    rewrite_pages(hub, decorate)
    report = await cull(hub, make_config())
    assert report.ok
    assert report.skipped == 0
    assert_exact(hub, population)


async def test_a_user_listed_on_two_pages_is_handled_once(autojump_clock: trio.testing.MockClock) -> None:
    # Offsets are not a snapshot: someone else's stop can move a user onto the next page the culler reads.
    hub, population = make_hub(30, idle=1.0)

    listed: dict[str, dict[str, Any]] = {}

    def echo_earlier_users(body: dict[str, Any]) -> None:
        # Pages come as offset 0, 20, 10, then 0 again: users 0, 1 and 2 were listed first of all.
        if body["_pagination"]["offset"] == 10:
            body["items"] += [listed[f"user-{i:02d}"] for i in (0, 1, 2)]
        listed.update((item["name"], item) for item in body["items"])

    rewrite_pages(hub, echo_earlier_users)
    report = await cull(hub, make_config(api_page_size=10))
    assert report.duplicates == 3
    assert report.ok
    assert_exact(hub, population)
    assert set(hub.statistics().stop_requests.values()) == {1}


async def test_servers_not_visible_is_not_no_servers(autojump_clock: trio.testing.MockClock) -> None:
    hub = FakeHub(token=TOKEN, clock=lambda: NOW)
    hub.add_user("busy", created=OLD, last_activity=OLD, servers={"": FakeServer("", OLD, FRESH)})

    def hide_servers(body: dict[str, Any]) -> None:
        for item in body["items"]:
            del item["servers"]
            del item["server"]

    rewrite_pages(hub, hide_servers)
    await cull(hub, make_config(cull_users=True))
    assert hub.statistics().requests_by_kind["delete_user"] == 0


async def test_a_server_without_readable_activity_is_not_culled(autojump_clock: trio.testing.MockClock) -> None:
    hub = FakeHub(token=TOKEN, clock=lambda: NOW)
    hub.add_user("busy", created=OLD, last_activity=FRESH, servers={"": FakeServer("", OLD, FRESH)})

    def hide_activity(body: dict[str, Any]) -> None:
        for item in body["items"]:
            del item["servers"][""]["last_activity"]

    rewrite_pages(hub, hide_activity)
    await cull(hub, make_config())
    assert hub.statistics().stop_requests == {}


# ------------------------------------------------------------------------------------------ the service


@attrs.define
class Watch:
    """What a running Culler did: pass start times (trio clock) and reports, and whether serve() returned."""

    starts: list[float] = attrs.Factory(list)
    reports: list[PassReport] = attrs.Factory(list)
    returned: bool = False

    def observe(self, report: PassReport) -> None:
        self.starts.append(trio.current_time() - report.duration)
        self.reports.append(report)


@asynccontextmanager
async def serving(hub: FakeHub, cfg: Config) -> AsyncIterator[tuple[Culler, Watch]]:
    """A Culler serving in the background against ``hub`` in memory; stopped at the end of the block."""
    watch = Watch()
    culler = Culler(cfg, transport=hub.transport(), reporters=[watch.observe])

    async def serve() -> None:
        await culler.serve()
        watch.returned = True

    async with hub.running(), trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        yield culler, watch
        assert not watch.returned, "serve() must not return before it is stopped"
        culler.stop(grace=0)


def wall_clock_hub(n: int, idle: float) -> tuple[FakeHub, Any]:
    # serve() measures idleness from the wall clock, which the autojump clock does not move.
    now = datetime.now(UTC)
    hub = FakeHub(token=TOKEN, clock=lambda: now)
    return hub, hub.populate(n, idle_fraction=idle, seed=5, now=now)


def down_until(deadline: float, answer: Callable[[httpx.Request], httpx.Response | None]) -> Fault:
    async def fault(request: httpx.Request) -> httpx.Response | None:
        return answer(request) if trio.current_time() < deadline else None

    return fault


def refused(request: httpx.Request) -> httpx.Response | None:
    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)


def errors(caplog: pytest.LogCaptureFixture, needle: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR and needle in r.getMessage()]


@pytest.mark.parametrize(
    "outage",
    [refused, lambda _r: httpx.Response(503, text="starting"), lambda _r: httpx.Response(200, text="<html>")],
    ids=["refused", "503", "garbage version"],
)
async def test_hub_down_at_start_is_waited_for(
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    outage: Callable[[httpx.Request], httpx.Response | None],
) -> None:
    hub, population = wall_clock_hub(30, 0.5)
    start = trio.current_time()
    hub.fault = down_until(start + 600, outage)
    async with serving(hub, make_config(cull_every=60)) as (culler, watch):
        await trio.sleep(590)
        assert culler.statistics().passes_started == 0, "no pass while the hub is down"
        probes = [r for r in caplog.records if r.levelno >= logging.WARNING and "Hub not ready" in r.getMessage()]
        assert len(probes) >= 6, "every failed probe is logged"
        assert all("http://127.0.0.1:8081/hub/api" in r.getMessage() for r in probes)
        await trio.sleep(200)
    assert watch.reports, "the culler recovered by itself"
    assert 600 <= watch.starts[0] <= 600 + 60 + 16, "it started within one capped probe interval of the hub"
    assert watch.reports[0].ok
    assert_exact(hub, population)


async def test_hub_down_for_minutes_mid_run(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    hub, population = wall_clock_hub(30, 0.5)
    start = trio.current_time()
    outage = (start + 100, start + 400)

    async def fault(request: httpx.Request) -> httpx.Response | None:
        if outage[0] <= trio.current_time() < outage[1]:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        return None

    hub.fault = fault
    late_comer = "went-idle-during-the-outage"
    async with serving(hub, make_config(cull_every=60)) as (_culler, watch):
        await trio.sleep(200)
        then = datetime.now(UTC) - timedelta(hours=3)
        hub.add_user(late_comer, created=then, last_activity=then, servers={"": FakeServer("", then, then)})
        await trio.sleep(400)
    # start-to-start spacing is kept through the outage: the schedule never slips or stops.
    assert watch.starts[:10] == pytest.approx([start + 60 * k for k in range(10)])
    aborted = [r for r in watch.reports if r.aborted]
    assert len(aborted) == 5, "the passes at 120, 180, 240, 300 and 360 s could not reach the hub"
    assert all("could not be reached" in (r.aborted or "") for r in aborted)
    assert errors(caplog, "could not be reached")
    assert watch.reports[-1].ok
    assert hub.users[late_comer].servers == {}, "culled once the hub came back"
    assert_exact(hub, population, also_idle=frozenset({(late_comer, "")}))


@pytest.mark.parametrize("status", [401, 403])
@pytest.mark.parametrize("cull_users", [False, True])
async def test_a_refused_token_is_one_clear_error_then_retried_at_the_interval(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture, status: int, cull_users: bool
) -> None:
    hub, population = wall_clock_hub(20, 0.5)
    start = trio.current_time()
    listings: list[float] = []

    async def fault(request: httpx.Request) -> httpx.Response | None:
        if is_page(request):
            listings.append(trio.current_time())
            if start + 100 <= trio.current_time() < start + 300:
                message = "Action is not authorized with current scopes; requires any of [list:users]"
                return httpx.Response(status, json={"status": status, "message": message})
        return None

    hub.fault = fault
    async with serving(hub, make_config(cull_every=120, cull_users=cull_users)) as (_culler, watch):
        await trio.sleep(400)
    assert watch.starts[:4] == pytest.approx([start, start + 120, start + 240, start + 360])
    first, refused_1, refused_2, recovered = watch.reports[:4]
    needed = (*SCOPES, "delete:users", "read:users") if cull_users else SCOPES
    for report in (refused_1, refused_2):
        assert report.aborted is not None
        assert all(scope in report.aborted for scope in needed), report.aborted
        assert ("delete:users" in report.aborted) == cull_users
        assert TOKEN not in report.aborted
    refused_listings = [t for t in listings if start + 100 <= t < start + 300]
    assert len(refused_listings) == 2, "a refusal is not retried within the pass: one request per pass"
    logged = [r for r in errors(caplog, "scopes") if all(scope in r.getMessage() for scope in needed)]
    assert len(logged) >= 2, "each refused pass says clearly which scopes are needed"
    assert first.ok
    assert recovered.ok
    assert_exact(hub, population)


async def test_a_lost_page_does_not_delay_the_next_pass(autojump_clock: trio.testing.MockClock) -> None:
    # serve() measures idleness from the wall clock, which the autojump clock does not move.
    hub, population, on_lost_page, after_it = lost_page_hub(now=datetime.now(UTC))
    start = trio.current_time()

    async def fault(request: httpx.Request) -> httpx.Response | None:
        if is_page(request) and request.url.params.get("offset") == "10" and trio.current_time() < start + 30:
            return httpx.Response(502, text="bad gateway")
        return None

    hub.fault = fault
    async with serving(hub, make_config(cull_every=60, api_page_size=10)) as (_culler, watch):
        await trio.sleep(90)
    assert watch.starts[:2] == pytest.approx([start, start + 60])
    first, second = watch.reports[:2]
    assert first.pages_failed == 1
    assert first.servers_stopped == len(after_it), "only the lost page's users wait for the next pass"
    assert second.ok
    assert second.servers_stopped == len(on_lost_page)
    assert_exact(hub, population)


# ------------------------------------------------------------------------------------------ loopback


async def test_a_hub_that_starts_listening_later_is_found() -> None:
    # Real sockets: a refused port, then a hub on that port; real time, so keep retries and probes short.
    port = dead_port()
    hub = FakeHub(token=TOKEN)
    population = hub.populate(20, idle_fraction=0.5, seed=3, now=datetime.now(UTC))
    cfg = make_config(url=f"http://127.0.0.1:{port}/hub/api", max_retries=0, cull_every=300)
    refused = trio.Event()

    def heard(error: HubError | None) -> None:
        if error is not None:
            refused.set()

    culler = Culler(cfg, probe_listeners=[heard])
    started = trio.Event()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:

            async def start_culler() -> None:
                await nursery.start(culler.serve)
                started.set()

            nursery.start_soon(start_culler)
            await refused.wait()  # its first probe was refused: it waits, and has not started
            assert not started.is_set()
            assert culler.statistics().passes_started == 0
            await nursery.start(partial(hub.serve, port=port))
            await started.wait()
            report = await culler.run_pass_now()  # the first pass, or a second one: either must be clean
            assert report.ok
            assert_exact(hub, population)
            culler.stop(grace=0)
            nursery.cancel_scope.cancel()


async def test_resets_trickles_and_silent_hubs_on_real_sockets() -> None:
    # In front of a real loopback FakeHub, a relay resets some connections (TCP RST, before the hub sees the
    # request) and trickles one answer; the hub itself never answers one stop and hangs up on another.
    now = datetime.now(UTC)
    hub = FakeHub(token=TOKEN, clock=lambda: now)
    population = hub.populate(30, idle_fraction=1.0, seed=2, now=now)
    first_seen: Counter[str] = Counter()

    def rule(method: str, target: str) -> RelayAction:
        first_seen[f"{method} {target}"] += 1
        if first_seen[f"{method} {target}"] > 1:
            return "forward"
        if target == "/hub/api/" or "offset=0" in target:
            return "reset"
        if method == "DELETE" and int(target.split("/")[4].split("-")[1]) % 4 == 0:
            return "reset"
        return "trickle" if "offset=10" in target else "forward"

    hung: Counter[str] = Counter()

    async def fault(request: httpx.Request) -> httpx.Response | None:
        path = request.url.path
        if request.method == "DELETE" and path.endswith(("/user-05/server", "/user-06/server")):
            hung[path] += 1
            if hung[path] == 1 and "user-05" in path:
                await trio.sleep(30)  # accepts, never answers: only the culler's deadline ends it
            if hung[path] == 1:
                raise RuntimeError("hang up without answering")
        return None

    hub.fault = fault
    with trio.fail_after(30):
        async with open_fake_hub(hub) as api_url:
            hub_port = int(api_url.split(":")[2].split("/")[0])
            async with open_relay(hub_port, rule, trickle_interval=0.05) as relay:
                cfg = make_config(
                    url=f"http://127.0.0.1:{relay.port}/hub/api", request_timeout=1.0, api_page_size=10, max_retries=3
                )
                report = await run_pass(cfg, now=datetime.now(UTC))
    assert report.ok, report.errors
    assert_exact(hub, population)
    resets = [entry for entry in relay.seen if entry[0] == "reset"]
    assert len(resets) == 2 + len([u for u in range(30) if u % 4 == 0])
    assert hub.statistics().requests_by_kind["version"] == 1, "a reset request never reached the hub"
    trickled = [entry[3] for entry in relay.seen if "offset=10" in entry[2]]
    assert len(trickled) == 2
    # httpx's per-read timeout (1 s) never fires on a byte every 50 ms: only the total deadline ends the attempt.
    assert 1.0 <= trickled[1] - trickled[0] <= 1.0 + 0.5 + 0.75
    assert hung == {"/hub/api/users/user-05/server": 2, "/hub/api/users/user-06/server": 2}


HOSTILE = ["u#x", "u?x=1", "u;x", "u@example.org", "u+tag", "u.dot", "u x", "u%41", "ü-user", "u/slash", "u%"]
# Names that are dot-segments: sent as they are, any HTTP client resolves them away ("/users/./server" becomes
# "/users/server", a request about the user called "server") and acts on another user, or on none.
HOSTILE += [".", "..", "...", "server"]
_ENCODED_SEGMENT = re.compile(r"^(?:[A-Za-z0-9_.~-]|%[0-9A-F]{2})+$")


async def test_hostile_names_on_the_wire_name_exactly_that_user() -> None:
    now = datetime.now(UTC)
    old, fresh = now - timedelta(hours=3), now - timedelta(seconds=10)
    hub = FakeHub(token=TOKEN, clock=lambda: now)
    hub.add_user("u", created=old, last_activity=fresh, servers={"": FakeServer("", old, fresh)})
    hub.add_user("decoy", created=old, last_activity=fresh, servers={"": FakeServer("", old, fresh)})
    named = "n#?; x/%"
    for name in HOSTILE:
        servers = {"": FakeServer("", old, old), named: FakeServer(named, old, old)}
        hub.add_user(name, created=old, last_activity=old, servers=servers)
    wire: list[bytes] = []

    async def record(request: httpx.Request) -> httpx.Response | None:
        if request.method == "DELETE":
            wire.append(request.url.raw_path)
        return None

    hub.fault = record
    with trio.fail_after(20):
        async with open_fake_hub(hub) as api_url:
            cfg = make_config(url=api_url, cull_users=True, remove_named_servers=True)
            report = await run_pass(cfg, now=now)
    assert report.ok, report.errors
    assert set(hub.users) == {"u", "decoy"}
    assert "" in hub.users["u"].servers
    assert "" in hub.users["decoy"].servers
    stats = hub.statistics()
    assert set(stats.stop_requests) == {(n, s) for n in HOSTILE for s in ("", named)}
    assert sorted(stats.users_deleted) == sorted(HOSTILE)
    for raw in wire:
        segments = raw.decode("ascii").split("/")
        assert segments[:4] == ["", "hub", "api", "users"]
        # Every name arrives as one segment with nothing left unencoded that a router could split or cut on.
        assert all(_ENCODED_SEGMENT.match(segment) for segment in segments[4:]), raw
        assert len(segments) in (5, 6, 7)
