"""Warnings delivered to the warned servers themselves (the notice API of trio-culler-notice, on FakeHub's fake
servers), their users' keeps, servers without the extension, hostile answers, the culler's own requests through the
proxy, and the scope the notices need."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing

import trio_culler._work as work
from trio_culler import Config
from trio_culler._cull_events import ACTIVITY_HUB, ACTIVITY_KERNELS, stretch_id
from trio_culler._notice import MAX_ANSWER_BYTES, NoticeFailed, parse_state
from trio_culler.testing import FakeHub, FakeKernel, FakeServer
from trio_culler.web._user_view import own_rule

from .support.faults import NOW, TOKEN, make_config
from .test_notify import Clock, Receiver, Run, at, culler

M = timedelta(minutes=1)
WEBHOOK = "http://127.0.0.1:9/warn"
PUBLIC = "http://proxy.test"


def config(**changes: Any) -> Config:
    base = {"timeout": 3600, "cull_every": 300, "warn_before": 900, "warn_url": WEBHOOK, "public_url": PUBLIC}
    return make_config(**{**base, **changes})


def make_hub(**users: FakeServer) -> FakeHub:
    hub = FakeHub(token=TOKEN, clock=lambda: NOW, public_url=PUBLIC)
    for name, server in users.items():
        hub.add_user(name, servers={"": server})
    return hub


def idle(minutes: float, **options: Any) -> FakeServer:
    return FakeServer("", started=NOW - 3 * 60 * M, last_activity=NOW - minutes * M, **options)


def stops(hub: FakeHub) -> set[str]:
    return {user for user, _server in hub.statistics().stop_requests}


# --- Delivered, withdrawn, with the server's own token ---------------------------------------------------------------


async def test_a_warning_is_put_on_the_server_and_withdrawn_when_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = make_hub(ann=idle(50), bob=idle(50))
    receiver = Receiver()
    async with culler(hub, config(rules=[{"users": ["bob"], "timeout": 3600}]), receiver) as run:
        reports = [await run(NOW)]
        ann, bob = hub.users["ann"].servers[""], hub.users["bob"].servers[""]
        assert ann.notice == {
            "id": stretch_id("ann", "", NOW - 180 * M, NOW + 10 * M),
            "warned_at": "2026-11-25T12:00:00Z",
            "cull_at": at(15),
            "idle_since": at(-50),
            "reason": "idle",
            "limit": "timeout",
            "limit_seconds": 3600,
            "rule": None,
            "activity": ACTIVITY_HUB,
            "keepable": True,
        }
        assert bob.notice is not None
        assert bob.notice["rule"] == "rules[0] (timeout=3600)", "what the rule sets, never whom it matches"
        assert ann.notice["id"] == receiver.posts[0]["id"] or ann.notice["id"] == receiver.posts[1]["id"]
        bob.last_activity = NOW + 2 * M  # bob came back
        reports.append(await run(NOW + 5 * M))
        assert bob.notice is None, "withdrawn"
        assert ann.notice is not None
        reports.append(await run(NOW + 15 * M))
        reports.append(await run(NOW + 20 * M))
    # Delivered beside the passes: each is counted by the report of the pass that ends after it.
    assert sum(report.notices_delivered for report in reports) == 3, "two PUTs and bob's DELETE"
    # A bodyless GET before each PUT (a server without the extension would count a PUT's body as activity), and
    # the state read before ann's cull.
    assert hub.statistics().notice_requests == {"PUT": 2, "DELETE": 1, "GET": 3}
    # Every request to a server carried a token of that server's own user, never the culler's.
    assert set(hub.statistics().server_credentials) == {"own"}
    assert stops(hub) == {"ann"}


async def test_a_notice_names_no_other_user_not_even_through_its_rule(autojump_clock: trio.testing.MockClock) -> None:
    """A rule's label names whom it matches (users, groups, profiles): the notice is its user's to read, so it
    carries the rule's number and what it sets, as the status page's user view does."""
    hub = make_hub(ann=idle(50), bob=idle(50))
    rules = [{"users": ["ann", "bob", "carol-the-admin"], "timeout": 3600, "remove": False}]
    async with culler(hub, config(rules=rules), Receiver()) as run:
        await run(NOW)
    for name, other in (("ann", "bob"), ("bob", "ann")):
        notice = hub.users[name].servers[""].notice
        assert notice is not None
        assert notice["rule"] == "rules[0] (timeout=3600, remove=false)"
        assert notice["rule"] == own_rule("rules[0] (users=ann, bob, carol-the-admin -> timeout=3600, remove=false)")
        body = json.dumps(notice)
        for word in (other, "carol", "users="):
            assert word not in body, body


async def test_with_kernel_activity_only_the_notice_says_what_counts(autojump_clock: trio.testing.MockClock) -> None:
    kernels = [FakeKernel("k", "idle", NOW - 50 * M)]
    hub = make_hub(ann=idle(1, kernels=kernels))  # a tab open: the hub's clock says active
    cfg = config(inspect_kernels=True, kernel_activity_only=True, max_age=8 * 3600)
    async with culler(hub, cfg, Receiver()) as run:
        await run(NOW)
    notice = hub.users["ann"].servers[""].notice
    assert notice is not None
    assert (notice["reason"], notice["activity"], notice["idle_since"]) == ("kernels_idle", ACTIVITY_KERNELS, at(-50))


async def test_a_max_age_notice_cannot_be_kept(autojump_clock: trio.testing.MockClock) -> None:
    hub = make_hub(ann=FakeServer("", started=NOW - 7 * 60 * M - 50 * M, last_activity=NOW))
    receiver = Receiver()
    async with culler(hub, config(max_age=8 * 3600), receiver) as run:
        await run(NOW)
        notice = hub.users["ann"].servers[""].notice
        assert notice is not None
        assert (notice["reason"], notice["limit"], notice["limit_seconds"]) == ("max_age", "max_age", 8 * 3600)
        assert (notice["keepable"], notice["idle_since"]) == (False, None)
        hub.clock.now = NOW + 5 * M  # type: ignore[attr-defined]
        hub.keep("ann")
        await run(NOW + 15 * M)
    assert stops(hub) == {"ann"}
    assert receiver.events() == [("warning", at(15), None), ("culled", at(15), None)]
    # The GET before the PUT only: a keep cannot change a max-age cull, so the state is not read before it.
    assert hub.statistics().notice_requests == {"GET": 1, "PUT": 1}


# --- Keeps ----------------------------------------------------------------------------------------------------


async def warned_then_kept_at_8(run: Run, hub: FakeHub, receiver: Receiver, clock: Clock) -> None:
    """A first pass at NOW warns ann (an idle(50) server: cull at +15); at +8 her user presses "Keep running"."""
    await run(NOW)
    clock.now = NOW + 8 * M
    hub.keep("ann", notice_id=receiver.posts[0]["id"])


async def test_keep_running_spares_the_server_and_starts_a_new_stretch(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_culler")
    hub = make_hub(ann=idle(50))  # due at +10; warned at once, cull at +15
    receiver = Receiver()
    clock = Clock()
    async with culler(hub, config(), receiver, clock) as run:
        await warned_then_kept_at_8(run, hub, receiver, clock)  # the hub's last_activity does not show it (yet)
        report = await run(NOW + 15 * M)
        assert report.keeps == 1
        assert stops(hub) == set()
        # A new stretch from the keep: due at +68, warned from +48 (20 minutes before: 15 + one interval).
        for minutes in (20, 45, 50, 55, 60, 65):
            await run(NOW + minutes * M)
        assert stops(hub) == set()
        await run(NOW + 68 * M)
    assert stops(hub) == {"ann"}
    assert receiver.events() == [
        ("warning", at(15), None),
        ("cancelled", at(15), "kept"),
        ("warning", at(68), None),
        ("culled", at(68), None),
    ]
    kept = receiver.posts[1]
    assert kept["kept_at"] == at(8)
    assert receiver.posts[0]["id"] == kept["id"] != receiver.posts[2]["id"] == receiver.posts[3]["id"]
    assert receiver.posts[2]["warned_at"] == at(50)
    assert f"Not culling server ann: its user asked to keep it at {at(8)}" in caplog.text
    assert hub.statistics().notice_requests["GET"] == 4, "before each of the two PUTs, and read before each cull"


async def test_a_keep_is_read_when_the_cull_time_comes_during_the_pass(autojump_clock: trio.testing.MockClock) -> None:
    """A pass that starts a second before the cull time announced and reaches the warned server a second after
    it (the hub slow to list): its state was not read (the cull time had not come when the pass began), so the
    pass must not cull it on that judgment; the next pass reads the keep. Culling there would stop a server
    whose user pressed "Keep running" (the real-browser test found it, about one run in two)."""
    hub = make_hub(ann=idle(50))  # due at +10; warned at once, cull at +15
    receiver = Receiver()
    clock = Clock()
    async with culler(hub, config(), receiver, clock) as run:
        await warned_then_kept_at_8(run, hub, receiver, clock)
        hub.list_latency = 2.0
        await run(NOW + 15 * M - timedelta(seconds=1))
        assert stops(hub) == set(), "culled on a judgment that did not read the keep"
        report = await run(NOW + 20 * M)
        assert report.keeps == 1
    assert stops(hub) == set()
    assert [event for event, _at, _detail in receiver.events()][:2] == ["warning", "cancelled"]
    assert receiver.events()[1][2] == "kept"


async def test_a_keep_counts_on_the_kernels_clock_too(autojump_clock: trio.testing.MockClock) -> None:
    """With --kernel-activity-only the kernels never show a keep: the culler remembers it, and measures the next
    stretch from it."""
    kernels = [FakeKernel("k", "idle", NOW - 50 * M)]
    hub = make_hub(ann=idle(1, kernels=kernels))
    receiver = Receiver()
    clock = Clock()
    cfg = config(inspect_kernels=True, kernel_activity_only=True)
    async with culler(hub, cfg, receiver, clock) as run:
        await run(NOW)
        clock.now = NOW + 8 * M
        hub.keep("ann")
        for minutes in (15, 20, 45):
            await run(NOW + minutes * M)
        assert stops(hub) == set()
        await run(NOW + 50 * M)
        await run(NOW + 68 * M)
    assert stops(hub) == {"ann"}
    assert receiver.events() == [
        ("warning", at(15), None),
        ("cancelled", at(15), "kept"),
        ("warning", at(68), None),
        ("culled", at(68), None),
    ]


async def test_a_keep_before_the_warning_is_not_a_keep_of_it(autojump_clock: trio.testing.MockClock) -> None:
    hub = make_hub(ann=idle(50))
    hub.clock = Clock(NOW - 5 * M)
    hub.keep("ann")  # an earlier stretch's
    receiver = Receiver()
    async with culler(hub, config(), receiver) as run:
        await run(NOW)
        await run(NOW + 15 * M)
    assert stops(hub) == {"ann"}
    assert receiver.events() == [("warning", at(15), None), ("culled", at(15), None)]


async def test_a_keep_dated_in_the_future_counts_as_now(autojump_clock: trio.testing.MockClock) -> None:
    """The server's clock is its user's: a keep dated next year spares the server once, from now."""

    async def forged(request: httpx.Request) -> httpx.Response | None:
        if request.method == "GET" and request.url.path.endswith("/notice"):
            keep = {"notice_id": None, "requested_at": "2027-12-31T00:00:00Z"}
            return httpx.Response(200, json={"notice": None, "keep": keep, "now": "2027-12-31T00:00:00Z"})
        return None

    hub = make_hub(ann=idle(50))
    hub.fault = forged
    receiver = Receiver()
    async with culler(hub, config(), receiver) as run:
        await run(NOW)
        await run(NOW + 15 * M)
        hub.fault = None
        await run(NOW + 60 * M)
        await run(NOW + 75 * M)
    assert [post["kept_at"] for post in receiver.posts if post["detail"] == "kept"] == [at(15)]
    assert receiver.events()[2:] == [("warning", at(75), None), ("culled", at(75), None)]


async def test_keeps_never_outlast_max_age(autojump_clock: trio.testing.MockClock) -> None:
    """A keep is activity, and no activity prevents a cull for --max-age: a user who keeps their server after
    each warning gets it culled at the max-age notice's time, as a busy kernel would."""
    hub = make_hub(ann=FakeServer("", started=NOW - 100 * M, last_activity=NOW - 50 * M))  # max-age at +20
    receiver = Receiver()
    clock = Clock()
    async with culler(hub, config(max_age=2 * 3600), receiver, clock) as run:
        for minutes in (0, 5, 10, 15, 20, 25, 30, 35, 40):
            if minutes in (10, 30):
                clock.now = NOW + (minutes - 2) * M
                hub.keep("ann")  # after the warning, and after the one for max-age
            await run(NOW + minutes * M)
    assert stops(hub) == {"ann"}
    # The events of one pass are delivered at once, in any order.
    events = receiver.events()
    assert [event for event in events if event[2] == "kept"] == [("cancelled", at(15), "kept")], "idleness: kept"
    # Past max-age (+20) no keep counts: culled at the max-age notice's time, within --warn-before of max-age.
    assert [event for event in events if event[0] == "culled"] == [("culled", at(35), None)]
    # One GET before each PUT (whether the server has the extension), and one keep read: the idle warning's. A
    # max-age cull does not even ask for a keep.
    requests = hub.statistics().notice_requests
    assert requests["GET"] == requests["PUT"] + 1


# --- Servers without the extension, and hostile ones ---------------------------------------------------------


async def test_a_server_without_the_extension_is_culled_as_before_counted_once_never_logged(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_culler")
    hub = make_hub(**{f"plain-{n}": idle(50, notices=False) for n in range(3)}, ann=idle(50))
    receiver = Receiver()
    async with culler(hub, config(), receiver) as run:
        reports = [await run(NOW + minutes * M) for minutes in (0, 5, 15, 20)]
    # Each counted once, by the report of the pass its 404 came in (the PUTs run beside the passes).
    assert sum(report.notices_without_extension for report in reports) == 3
    assert sum(report.notices_failed for report in reports) == 0
    assert stops(hub) == {"ann", "plain-0", "plain-1", "plain-2"}
    assert [event for event in receiver.events() if event[0] == "culled"] == [("culled", at(15), None)] * 4
    # A bodyless GET each, and a PUT only where it answered: a PUT's body to a server without the extension would
    # be activity to the proxy even answered 404. The state is read before the cull only where there is an
    # extension to ask.
    assert hub.statistics().notice_requests == {"GET": 5, "PUT": 1}
    noticed = [r for r in caplog.records if "plain-" in r.getMessage() and "notice" in r.getMessage().lower()]
    assert noticed == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


#: Answers to GET notice that must not be read. Those with a time carry one after the warning (12:00): read
#: leniently, each would be a keep, and spare its server.
HOSTILE: list[tuple[str, httpx.Response]] = [
    ("huge", httpx.Response(200, content=b" " * (MAX_ANSWER_BYTES + 1) + b"{}")),
    ("not json", httpx.Response(200, content=b"<html>keep me</html>")),
    ("a list", httpx.Response(200, json=[{"keep": None}])),
    ("keep not an object", httpx.Response(200, json={"notice": None, "keep": "yes", "now": "x"})),
    (
        "keep with more keys",
        httpx.Response(200, json={"keep": {"notice_id": None, "requested_at": "2026-11-25T12:05:00Z", "by": "me"}}),
    ),
    (
        "a time without zone",
        httpx.Response(200, json={"keep": {"notice_id": None, "requested_at": "2026-11-25T12:05"}}),
    ),
    (
        "an id with a slash",
        httpx.Response(200, json={"keep": {"notice_id": "../x", "requested_at": "2026-11-25T12:05Z"}}),
    ),
    ("a number for a time", httpx.Response(200, json={"keep": {"notice_id": None, "requested_at": 1764072300}})),
    ("NaN", httpx.Response(200, content=b'{"keep": NaN}')),
    ("forbidden", httpx.Response(403, json={"message": "no"})),
    ("server error", httpx.Response(500, json={"message": "no"})),
    ("redirect", httpx.Response(302, headers={"Location": "/hub/login"})),
]


@pytest.mark.parametrize(("what", "answer"), HOSTILE, ids=[what for what, _answer in HOSTILE])
async def test_an_answer_that_cannot_be_read_is_no_keep_and_never_stops_the_cull(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture, what: str, answer: httpx.Response
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_culler")

    async def hostile(request: httpx.Request) -> httpx.Response | None:
        if request.method == "GET" and request.url.path.endswith("/notice"):
            return answer
        return None

    hub = make_hub(ann=idle(50), bob=idle(50))
    receiver = Receiver()
    async with culler(hub, config(), receiver) as run:
        await run(NOW)
        hub.fault = hostile
        report = await run(NOW + 15 * M)
    assert stops(hub) == {"ann", "bob"}, what
    assert report.notices_failed == 2
    failures = [r for r in caplog.records if "Could not deliver a notice" in r.getMessage()]
    assert [r.levelno for r in failures] == [logging.WARNING, logging.DEBUG], "once per pass for each kind"
    assert TOKEN not in caplog.text


async def test_a_server_that_hangs_costs_one_deadline_and_the_cull_goes_ahead(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def hang(request: httpx.Request) -> httpx.Response | None:
        if request.url.path.endswith("/notice"):
            await trio.sleep_forever()
        return None

    hub = make_hub(ann=idle(50))
    hub.fault = hang
    receiver = Receiver()
    async with culler(hub, config(), receiver) as run:
        await run(NOW)
        started = trio.current_time()
        report = await run(NOW + 15 * M)
        assert trio.current_time() - started < 20, "one deadline (10 s), not a retry after a timeout"
    assert stops(hub) == {"ann"}
    assert report.notices_failed == 2, "the PUT that timed out, then the GET"


@pytest.mark.parametrize(
    "body",
    [
        b'{"notice": null, "keep": null, "now": "2026-11-25T12:00:00Z"}',
        b'{"keep": null, "notice": {"id": "x"}, "extra": [1, 2, 3]}',
    ],
)
def test_a_state_without_a_keep(body: bytes) -> None:
    assert parse_state(body) is None


def test_a_state_with_a_keep() -> None:
    keep = parse_state(b'{"notice": null, "keep": {"notice_id": "a-1", "requested_at": "2026-11-25T13:40:12.503118Z"}}')
    assert keep is not None
    assert keep.notice_id == "a-1"
    assert keep.requested_at == datetime(2026, 11, 25, 13, 40, 12, 503118, tzinfo=keep.requested_at.tzinfo)
    assert keep.requested_at.utcoffset() == timedelta(0)
    with pytest.raises(NoticeFailed, match="no 'keep'") as failed:
        parse_state(b'{"notice": null}')
    assert failed.value.kind == "unreadable"


# --- The culler's own requests are not its user's activity -------------------------------------------------------


async def test_the_cullers_own_requests_never_move_the_cull_time_announced(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The proxy records every request the culler makes through it (the notice, the inspection, the state read
    before the cull) as activity of the server, and the hub folds it into last_activity: the warning must not
    push its own cull time back, pass after pass."""
    kernels = [FakeKernel("k", "idle", NOW - 50 * M)]
    hub = make_hub(ann=idle(50), bob=idle(50, kernels=kernels))
    hub.proxy_records_activity = True
    receiver = Receiver()
    clock = Clock()
    cfg = config(inspect_kernels=True)
    async with culler(hub, cfg, receiver, clock) as run:
        await run(NOW)
        assert hub.users["ann"].servers[""].last_activity == NOW, "the PUT, as the hub now shows it"
        for minutes in (5, 10):
            await run(NOW + minutes * M)
        assert receiver.events() == [("warning", at(15), None)] * 2
        await run(NOW + 15 * M)
    assert stops(hub) == {"ann", "bob"}
    assert receiver.events("ann") == [("warning", at(15), None), ("culled", at(15), None)]
    assert receiver.events("bob") == [("warning", at(15), None), ("culled", at(15), None)]


async def test_a_users_own_activity_after_the_culler_s_still_cancels(autojump_clock: trio.testing.MockClock) -> None:
    hub = make_hub(ann=idle(50))
    hub.proxy_records_activity = True
    receiver = Receiver()
    async with culler(hub, config(), receiver) as run:
        await run(NOW)
        hub.users["ann"].servers[""].last_activity = NOW + 3 * M  # a request of the user's, later than the PUT
        await run(NOW + 5 * M)
        await run(NOW + 15 * M)
    assert stops(hub) == set()
    assert receiver.events() == [("warning", at(15), None), ("cancelled", at(15), "used")]


async def test_activity_the_reread_saw_is_not_lost_when_the_cullers_next_request_hides_it(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The proxy keeps only a route's latest request. The re-read before a cull shows the user's activity (the
    cull is prevented); then a request of the culler's own reaches the server, and the hub shows that one: were
    the warning still standing, the next pass would take it for the culler's alone, judge the server by the
    warning's old activity and cull a server in use (seen in the soak). The re-read ends the warning instead."""
    monkeypatch.setattr(work, "RECHECK_AFTER", -1.0)  # every cull is read again first
    hub = make_hub(ann=idle(50))
    used_at = NOW + 15 * M - timedelta(seconds=10)

    async def used(request: httpx.Request) -> httpx.Response | None:
        if request.method == "GET" and request.url.path.endswith("/users/ann"):
            hub.users["ann"].servers[""].last_activity = used_at  # the user came back after the listing
        return None

    receiver = Receiver()
    async with culler(hub, config(), receiver) as run:
        await run(NOW)
        hub.fault = used
        report = await run(NOW + 15 * M)
        assert report.culls_prevented == 1
        hub.fault = None
        # The state read before the prevented cull, as the proxy records it and the hub folds it in.
        hub.users["ann"].servers[""].last_activity = NOW + 15 * M
        await run(NOW + 20 * M)
        await run(NOW + 25 * M)
    assert stops(hub) == set()
    assert receiver.events() == [("warning", at(15), None), ("cancelled", at(15), "used")]


# --- The scope notices need --------------------------------------------------------------------------------


SCOPES_WITHOUT_TOKENS = ("list:users", "read:users:activity", "read:servers", "delete:servers")


async def test_without_tokens_notices_are_skipped_with_one_warning_per_pass_and_the_webhook_still_hears(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    hub = make_hub(ann=idle(50))
    hub.scopes = frozenset(SCOPES_WITHOUT_TOKENS)
    receiver = Receiver()
    async with culler(hub, config(), receiver) as run:
        for minutes in (0, 5, 15):
            report = await run(NOW + minutes * M)
            assert report.aborted is None
    assert stops(hub) == {"ann"}
    assert receiver.events() == [("warning", at(15), None), ("culled", at(15), None)]
    assert hub.statistics().notice_requests == {}
    skipped = [r for r in caplog.records if "lacks tokens: warnings are not delivered" in r.getMessage()]
    assert len(skipped) == 3
    assert all(r.levelno == logging.WARNING for r in skipped)


async def test_warnings_through_the_servers_alone_need_tokens_or_no_pass_runs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = make_hub(ann=idle(50))
    hub.scopes = frozenset(SCOPES_WITHOUT_TOKENS)
    cfg = attrs.evolve(config(), warn_url=None)
    async with culler(hub, cfg, Receiver()) as run:
        report = await run(NOW + 60 * M)
    assert report.aborted is not None
    assert "lacks tokens (--warn-before: to mint each server's own token to deliver its warning)" in report.aborted
    assert stops(hub) == set()
