"""Warnings before a cull: events with ids (warning, then culled or cancelled), a notice never shorter than
--warn-before, never in a pass's way; the hook and the webhook. Notices to the servers themselves, keeps and the
state file have their own modules (test_notices, test_warnings_state)."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing

from trio_culler import Config, ConfigError, PassReport
from trio_culler._credentials import open_server_credentials
from trio_culler._cull_events import CullEvent, stretch_id
from trio_culler._engine import run_pass_with
from trio_culler._hub import open_hub_client
from trio_culler._metrics import Metrics
from trio_culler._notify import DELIVERY_TIMEOUT, open_notifier
from trio_culler.testing import FakeHub, FakeServer

from .support.faults import NOW, TOKEN
from .support.faults import make_config as config

M = timedelta(minutes=1)
WEBHOOK = "http://127.0.0.1:9/warn"


@attrs.define
class Clock:
    """The one clock of a test: the passes' ``now``, the hub's and the notifier's."""

    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now


class Receiver:
    """An httpx transport standing for a webhook: records each POST, answers as told."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.posts: list[dict[str, Any]] = []
        self.headers: list[httpx.Headers] = []
        self.statuses = statuses or []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.headers.append(request.headers)
        status = self.statuses.pop(0) if self.statuses else 204
        if status < 300:
            self.posts.append(json.loads(request.content))
        return httpx.Response(status)

    def events(self, user: str | None = None) -> list[tuple[str, str, str | None]]:
        """``(event, cull_at, detail)`` of each POST (of ``user``'s), in order."""
        return [
            (post["event"], post["cull_at"], post["detail"])
            for post in self.posts
            if user is None or post["user"] == user
        ]


Run = Callable[[datetime], Awaitable[PassReport]]


@asynccontextmanager
async def culler(hub: FakeHub, cfg: Config, receiver: Receiver, clock: Clock | None = None) -> AsyncIterator[Run]:
    """A long-running culler's passes, one per call, at the time given: its notifier (with server notices, its
    per-server credentials) lives as long as the block; each pass waits for the stops it asked for, then for
    the deliveries that run beside it."""
    clock = Clock() if clock is None else clock
    hub.clock = clock
    async with (
        hub.running(),
        open_hub_client(cfg, transport=hub.transport()) as client,
        open_server_credentials(client, cfg) as credentials,
        open_notifier(
            cfg, transport=httpx.MockTransport(receiver), hub=client, credentials=credentials, clock=clock
        ) as notifier,
    ):
        assert notifier is not None

        async def run(at: datetime) -> PassReport:
            clock.now = at
            credentials.begin_pass()
            report = await run_pass_with(client, cfg, now=at, notifier=notifier, credentials=credentials)
            await hub.wait_stops_done()
            await trio.sleep(5)  # deliveries run beside the passes
            return report

        yield run


async def passes(
    hub: FakeHub, cfg: Config, times: list[datetime], receiver: Receiver, *, pause: float = 5
) -> list[PassReport]:
    """A pass at each of ``times``, and one more at the last (its report counts the last deliveries)."""
    reports = []
    async with culler(hub, cfg, receiver) as run:
        for now in [*times, times[-1]]:
            reports.append(await run(now))
    return reports


def idle_hub(*names: str, idle: timedelta) -> FakeHub:
    hub = FakeHub(token=TOKEN, clock=lambda: NOW)
    for name in names:
        server = FakeServer("", started=NOW - idle - 60 * M, last_activity=NOW - idle)
        hub.add_user(name, created=NOW - 100 * 60 * M, last_activity=NOW - idle, servers={"": server})
    return hub


def at(minutes: float) -> str:
    return (NOW + minutes * M).isoformat().replace("+00:00", "Z")


# --- What an event says ----------------------------------------------------------------------------------------


def test_the_payload_keeps_the_first_releases_keys_and_adds_the_events() -> None:
    event = CullEvent(
        event="cancelled",
        user="ü ser",
        server="gpu",
        id="0123456789abcdef",
        warned_at=NOW - 10 * M,
        cull_at=NOW,
        reason="max_age",
        idle_seconds=12.34567,
        at=NOW - M,
        detail="kept",
        kept_at=NOW - 2 * M,
    )
    assert event.payload() == {
        "user": "ü ser",
        "server": "gpu",
        "cull_at": "2026-11-25T12:00:00Z",
        "reason": "max_age",
        "idle_seconds": 12.346,
        "event": "cancelled",
        "id": "0123456789abcdef",
        "warned_at": "2026-11-25T11:50:00Z",
        "at": "2026-11-25T11:59:00Z",
        "detail": "kept",
        "kept_at": "2026-11-25T11:58:00Z",
    }


def test_a_stretch_id_is_derived_from_what_names_the_stretch() -> None:
    one = stretch_id("ann", "", NOW - 60 * M, NOW)
    assert one == stretch_id("ann", "", NOW - 60 * M, NOW), "the same after a restart, with or without state"
    assert len(one) == 16
    assert one.isalnum()
    others = {
        stretch_id("ann", "", NOW - 60 * M, NOW + M),  # activity moved the cull time
        stretch_id("ann", "", NOW - 30 * M, NOW),  # the server was started again
        stretch_id("ann", "gpu", NOW - 60 * M, NOW),
        stretch_id("bob", "", NOW - 60 * M, NOW),
        stretch_id("ann", "", None, NOW),
    }
    assert one not in others
    assert len(others) == 5


def test_configuration_is_checked() -> None:
    with pytest.raises(
        ConfigError, match=r"--warn-before needs --warn-url, c\.IdleCuller\.warn_hook or --warn-servers"
    ):
        config(warn_before=60, warn_servers=False)
    # Alone, --warn-before warns through the servers themselves.
    assert config(warn_before=60).warn_servers
    with pytest.raises(ConfigError, match="need --warn-before"):
        config(warn_url=WEBHOOK)
    with pytest.raises(ConfigError, match="--warn-url must be an http"):
        config(warn_before=60, warn_url="ftp://x")
    assert config(warn_before=60, state_file="").state_file is None
    assert Config.from_environment({"JUPYTERHUB_API_TOKEN": "t"}).state_file == "trio-culler-state.json"
    assert Config(api_token="t").state_file is None, "a library writes no file unless told to"


# --- Timing: the notice announced is never shorter than --warn-before --------------------------------------------


async def test_a_server_is_warned_once_and_culled_at_the_time_announced(autojump_clock: trio.testing.MockClock) -> None:
    # Timeout 1 h, warnings 15 min before, a pass every 5 min: a server is warned at the first pass that finds its
    # cull within 20 min (15 + 5): the next pass would leave less than 15.
    hub = idle_hub("ann", "bob", idle=35 * M)  # due at +25
    hub.add_user("cat", created=NOW - 100 * M, servers={"": FakeServer("", started=NOW, last_activity=NOW)})
    receiver = Receiver()
    cfg = config(timeout=3600, cull_every=300, warn_before=900, warn_url=WEBHOOK)
    reports = await passes(hub, cfg, [NOW + k * 5 * M for k in range(7)], receiver)
    # Warned at +5 (due in 20 min), for the rule's time, +25: 20 minutes of notice.
    assert [r.warning_events.get("warning", 0) for r in reports] == [0, 2, 0, 0, 0, 0, 0, 0]
    assert receiver.events("ann") == [("warning", at(25), None), ("culled", at(25), None)]
    assert receiver.events("bob") == [("warning", at(25), None), ("culled", at(25), None)]
    assert receiver.events("cat") == []
    # One id per stretch, the same in both events, another per server.
    ids = {post["user"]: {p["id"] for p in receiver.posts if p["user"] == post["user"]} for post in receiver.posts}
    assert all(len(found) == 1 for found in ids.values())
    assert ids["ann"] != ids["bob"]
    assert {post["warned_at"] for post in receiver.posts} == {at(5)}
    assert [sum(r.servers_culled.values()) for r in reports] == [0, 0, 0, 0, 0, 2, 0, 0]
    assert set(hub.statistics().stop_requests) == {("ann", ""), ("bob", "")}
    assert sum(r.warning_events.get("culled", 0) for r in reports) == 2
    # Never the hub's token, nor any Authorization at all.
    assert all("authorization" not in headers for headers in receiver.headers)
    assert all(TOKEN not in str(headers) for headers in receiver.headers)


async def test_a_server_due_too_soon_for_the_notice_is_culled_warn_before_after_its_warning(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Passes every 30 minutes, warnings 15 minutes before: a window of 45 minutes. ann is due at +40: warned at
    # once (40 minutes of notice) and culled at its rule's time. bob is due at +5: warned at once, and culled 15
    # minutes later, not at its rule's time.
    hub = idle_hub("ann", idle=20 * M)  # due at +40
    hub.add_user("bob", servers={"": FakeServer("", started=NOW - 2 * 60 * M, last_activity=NOW - 55 * M)})
    receiver = Receiver()
    cfg = config(timeout=3600, cull_every=1800, warn_before=900, warn_url=WEBHOOK)
    async with culler(hub, cfg, receiver) as run:
        await run(NOW)
        assert receiver.events("ann") == [("warning", at(40), None)]
        assert receiver.events("bob") == [("warning", at(15), None)]
        await run(NOW + 10 * M)  # bob's rule would cull it now: it waits for the notice it was given
        assert hub.statistics().stop_requests == {}
        await run(NOW + 15 * M)
        assert set(hub.statistics().stop_requests) == {("bob", "")}
        await run(NOW + 40 * M)
    assert set(hub.statistics().stop_requests) == {("ann", ""), ("bob", "")}
    assert receiver.events("bob") == [("warning", at(15), None), ("culled", at(15), None)]


async def test_an_overdue_server_is_warned_then_culled_after_the_notice(autojump_clock: trio.testing.MockClock) -> None:
    hub = idle_hub("ann", idle=5 * 60 * M)
    receiver = Receiver()
    cfg = config(timeout=3600, cull_every=300, warn_before=600, warn_url=WEBHOOK)
    reports = await passes(hub, cfg, [NOW, NOW + 5 * M, NOW + 10 * M], receiver)
    assert receiver.events() == [("warning", at(10), None), ("culled", at(10), None)]
    assert [sum(r.servers_culled.values()) for r in reports] == [0, 0, 1, 0]


async def test_a_warning_late_in_a_long_pass_gives_the_full_notice_from_when_it_is_sent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The hub takes ten minutes to answer the listing (slow after a restart): the warning goes out ten minutes
    after the pass began, and announces --warn-before from then, not from the pass's start (seen in the soak:
    a cull time already past, and the server culled 60 ms after its warning)."""
    hub = idle_hub("ann", idle=50 * M)  # due at +10

    async def slow_listing(request: httpx.Request) -> httpx.Response | None:
        if request.method == "GET" and request.url.path.endswith("/users"):
            await trio.sleep(10 * 60)
        return None

    hub.fault = slow_listing
    receiver = Receiver()
    cfg = config(timeout=3600, cull_every=300, warn_before=900, warn_url=WEBHOOK, request_timeout=3600)
    async with culler(hub, cfg, receiver) as run:
        report = await run(NOW)
    assert receiver.events("ann") == [("warning", at(25), None)]
    assert sum(report.servers_culled.values()) == 0


async def test_a_server_due_exactly_at_the_window_edge_is_warned_in_this_pass(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Due in 20 minutes: exactly --warn-before (15 min) plus one interval (5 min). The window includes its edge.
    hub = idle_hub("ann", idle=40 * M)
    hub.add_user("bob", servers={"": FakeServer("", started=NOW - 2 * 60 * M, last_activity=NOW - 39 * M)})
    receiver = Receiver()
    cfg = config(timeout=3600, cull_every=300, warn_before=900, warn_url=WEBHOOK)
    reports = await passes(hub, cfg, [NOW], receiver)
    assert [(post["user"], post["cull_at"]) for post in receiver.posts] == [("ann", at(20))]
    assert [sum(r.servers_culled.values()) for r in reports] == [0, 0]


# --- Cancelled: used again, spared, stopped by someone else ---------------------------------------------------


async def test_a_warned_server_used_again_is_cancelled_and_its_next_stretch_has_a_new_id(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = idle_hub("ann", idle=50 * M)  # due at +10
    receiver = Receiver()
    cfg = config(timeout=3600, cull_every=300, warn_before=900, warn_url=WEBHOOK)
    async with culler(hub, cfg, receiver) as run:
        await run(NOW)  # warned: cull at +15
        hub.users["ann"].servers[""].last_activity = NOW + 7 * M  # the user came back
        report = await run(NOW + 10 * M)
        assert report.warning_events == {"warning": 0, "cancelled": 1, "culled": 0}
        await run(NOW + 15 * M)  # not culled
        assert hub.statistics().stop_requests == {}
        # Idle again: the next stretch is due at +67, warned from +47.
        await run(NOW + 45 * M)
        await run(NOW + 50 * M)
        await run(NOW + 67 * M)
    assert receiver.events() == [
        ("warning", at(15), None),
        ("cancelled", at(15), "used"),
        ("warning", at(67), None),
        ("culled", at(67), None),
    ]
    first, cancelled, second, culled = (post["id"] for post in receiver.posts)
    assert first == cancelled != second == culled
    assert set(hub.statistics().stop_requests) == {("ann", "")}


async def test_a_warned_server_stopped_by_someone_else_is_cancelled_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = idle_hub("ann", "bob", idle=50 * M)
    receiver = Receiver()
    cfg = config(timeout=3600, cull_every=300, warn_before=900, warn_url=WEBHOOK)
    async with culler(hub, cfg, receiver) as run:
        await run(NOW)
        del hub.users["ann"].servers[""]  # its user stopped it
        # bob's server was stopped and started again: another server, whose warnings start afresh.
        hub.users["bob"].servers[""] = FakeServer("", started=NOW + 3 * M, last_activity=NOW + 3 * M)
        await run(NOW + 5 * M)
        await run(NOW + 10 * M)
    assert receiver.events("ann") == [("warning", at(15), None), ("cancelled", at(15), "stopped")]
    assert receiver.events("bob") == [("warning", at(15), None), ("cancelled", at(15), "stopped")]
    assert hub.statistics().stop_requests == {}


async def test_a_server_one_pass_missed_keeps_its_warning_and_is_culled_at_the_next(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The hub pages users by offset and others' starts and stops shift the pages: a complete pass can miss a
    server that still runs (benchmarks/SOAK.md, finding 2). Its warning stands; the next pass culls it, once
    warned, instead of warning it afresh (and restarting its clock with the inspection that comes with it)."""
    hub = idle_hub("ann", "bob", idle=35 * M)  # due at +25, warned at +5
    receiver = Receiver()
    cfg = config(timeout=3600, cull_every=300, warn_before=900, warn_url=WEBHOOK)
    async with culler(hub, cfg, receiver) as run:
        for minutes in (0, 5, 10, 15, 20):
            await run(NOW + minutes * M)
        ann = hub.users.pop("ann")  # the pass at +25 does not see ann: a page shifted under it
        report = await run(NOW + 25 * M)
        assert report.aborted is None
        hub.users["ann"] = ann
        await run(NOW + 30 * M)
        await run(NOW + 35 * M)
    assert receiver.events("ann") == [("warning", at(25), None), ("culled", at(25), None)]
    assert receiver.events("bob") == [("warning", at(25), None), ("culled", at(25), None)]
    assert set(hub.statistics().stop_requests) == {("ann", ""), ("bob", "")}


async def test_a_server_a_rule_now_exempts_is_cancelled(autojump_clock: trio.testing.MockClock, tmp_path: Any) -> None:
    """A restart with a rule that exempts a warned server: the warning (read back from the state file) is
    cancelled, and the server kept."""
    hub = idle_hub("ann", idle=50 * M)
    receiver = Receiver()
    state = str(tmp_path / "state.json")
    cfg = config(timeout=3600, cull_every=300, warn_before=900, warn_url=WEBHOOK, state_file=state)
    async with culler(hub, cfg, receiver) as run:
        await run(NOW)
    exempting = attrs.evolve(cfg, rules=[{"users": ["ann"], "cull": False}])
    async with culler(hub, exempting, receiver) as run:
        await run(NOW + 15 * M)
        await run(NOW + 20 * M)
    assert receiver.events() == [("warning", at(15), None), ("cancelled", at(15), "exempt")]
    assert hub.statistics().stop_requests == {}


# --- The hook and the webhook -----------------------------------------------------------------------------------


async def test_a_failing_or_hanging_hook_never_holds_a_pass(autojump_clock: trio.testing.MockClock) -> None:
    hub = idle_hub("ann", "bob", idle=5 * 60 * M)
    calls: list[str] = []

    async def hook(user: dict[str, Any], server: dict[str, Any], cull_at: datetime) -> None:
        calls.append(user["name"])
        if user["name"] == "ann":
            raise RuntimeError("mail server down")
        await trio.sleep_forever()

    cfg = config(timeout=3600, warn_before=600, warn_hook=hook)
    async with hub.running(), open_hub_client(cfg, transport=hub.transport()) as client, open_notifier(cfg) as n:
        start = trio.current_time()
        first = await run_pass_with(client, cfg, now=NOW, notifier=n)
        # The pass did not wait for the hooks (one raises, one never returns).
        assert trio.current_time() - start < 1
        await trio.sleep(DELIVERY_TIMEOUT + 1)
        second = await run_pass_with(client, cfg, now=NOW + 11 * M, notifier=n)
        await hub.wait_stops_done()
    assert sorted(calls) == ["ann", "bob"], "a hook without an event parameter hears warnings only"
    assert first.warnings_failed + second.warnings_failed == 2
    assert set(hub.statistics().stop_requests) == {("ann", ""), ("bob", "")}
    metrics = Metrics()
    for report in (first, second):
        metrics.observe(report)
    assert metrics.registry.get_sample_value("trio_culler_warnings_total", {"outcome": "failed"}) == 2
    assert metrics.registry.get_sample_value("trio_culler_warnings_total", {"outcome": "sent"}) == 0
    assert metrics.registry.get_sample_value("trio_culler_warning_events_total", {"event": "warning"}) == 2
    assert metrics.registry.get_sample_value("trio_culler_warning_events_total", {"event": "culled"}) == 2


async def test_a_hook_that_names_event_hears_every_event_and_others_only_warnings(
    autojump_clock: trio.testing.MockClock,
) -> None:
    heard: list[dict[str, Any]] = []
    legacy: list[dict[str, Any]] = []

    async def aware(user: dict[str, Any], server: dict[str, Any], cull_at: datetime, event: str, **more: Any) -> None:
        heard.append({"user": user["name"], "cull_at": cull_at, "event": event, **more})

    async def old(user: dict[str, Any], server: dict[str, Any], cull_at: datetime, **more: Any) -> None:
        legacy.append({"user": user["name"], **more})

    for hook in (aware, old):
        hub = idle_hub("ann", "bob", idle=50 * M)
        cfg = config(timeout=3600, cull_every=300, warn_before=900, warn_hook=hook)
        async with culler(hub, cfg, Receiver()) as run:
            await run(NOW)
            hub.users["bob"].servers[""].last_activity = NOW + M
            await run(NOW + 5 * M)
            await run(NOW + 15 * M)
    assert [(h["event"], h["detail"]) for h in heard if h["user"] == "ann"] == [("warning", None), ("culled", None)]
    assert [(h["event"], h["detail"]) for h in heard if h["user"] == "bob"] == [
        ("warning", None),
        ("cancelled", "used"),
    ]
    assert {h["id"] for h in heard if h["user"] == "ann"} == {stretch_id("ann", "", NOW - 110 * M, NOW + 10 * M)}
    assert all(h["cull_at"] == NOW + 15 * M and h["warned_at"] == NOW for h in heard)
    assert set(heard[0]) == {"user", "cull_at", "event", "id", "reason", "detail", "kept_at", "warned_at"}
    # The first release's hook, **kwargs and all: the warnings, with exactly the first release's arguments.
    assert sorted(legacy, key=lambda h: h["user"]) == [{"user": "ann"}, {"user": "bob"}]


async def test_the_webhook_is_retried_and_a_sync_hook_gets_the_models(monkeypatch: pytest.MonkeyPatch) -> None:
    # The real clock: a sync hook runs in a thread, which an autojump clock would not wait for.
    monkeypatch.setattr("trio_culler._deliver.POST_BACKOFF", 0.01)
    hub = idle_hub("ann", idle=50 * M)
    receiver = Receiver(statuses=[503, 502])
    seen: list[tuple[str, str, datetime]] = []

    def hook(user: dict[str, Any], server: dict[str, Any], cull_at: datetime) -> None:
        seen.append((user["name"], server["url"], cull_at))

    cfg = config(timeout=3600, cull_every=60, warn_before=900, warn_url=WEBHOOK, warn_hook=hook)
    async with (
        hub.running(),
        open_hub_client(cfg, transport=hub.transport()) as client,
        open_notifier(cfg, transport=httpx.MockTransport(receiver)) as n,
    ):
        await run_pass_with(client, cfg, now=NOW, notifier=n)
    # Leaving open_notifier waited for the delivery: two refusals, then the POST that got through.
    assert len(receiver.headers) == 3
    assert [post["user"] for post in receiver.posts] == ["ann"]
    # --warn-before from the warning itself, which came a few real milliseconds into the pass.
    [(name, url, cull_at)] = seen
    assert (name, url) == ("ann", "/user/ann/")
    assert NOW + 15 * M <= cull_at < NOW + 15 * M + timedelta(seconds=5)


async def test_a_webhook_that_refuses_is_counted_failed(autojump_clock: trio.testing.MockClock) -> None:
    hub = idle_hub("ann", idle=50 * M)
    receiver = Receiver(statuses=[404])
    cfg = config(timeout=3600, warn_before=900, warn_url=WEBHOOK)
    reports = await passes(hub, cfg, [NOW], receiver)
    assert receiver.posts == []
    assert sum(r.warnings_failed for r in reports) == 1


async def test_dry_run_warns_nobody_and_writes_no_state(autojump_clock: trio.testing.MockClock, tmp_path: Any) -> None:
    hub = idle_hub("ann", idle=50 * M)
    receiver = Receiver()
    state = tmp_path / "state.json"
    cfg = attrs.evolve(config(timeout=3600, warn_before=900, warn_url=WEBHOOK, state_file=str(state)), dry_run=True)
    reports = await passes(hub, cfg, [NOW, NOW + 20 * M], receiver)
    assert receiver.headers == []
    assert hub.statistics().notice_requests == {}
    assert not state.exists()
    assert reports[0].warning_events["warning"] == 1  # counted (what a real run would send), not delivered


async def test_a_blocking_sync_hook_runs_beside_the_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    # The real clock: the hook blocks a thread, and the pass must finish while it is still blocked.
    monkeypatch.setattr("trio_culler._deliver.DELIVERY_TIMEOUT", 5.0)
    hub = idle_hub("ann", idle=5 * 60 * M)
    entered, release = threading.Event(), threading.Event()

    def hook(user: dict[str, Any], server: dict[str, Any], cull_at: datetime) -> None:
        entered.set()
        release.wait(30)

    cfg = config(timeout=3600, warn_before=600, warn_hook=hook)
    async with hub.running(), open_hub_client(cfg, transport=hub.transport()) as client, open_notifier(cfg) as n:
        assert n is not None
        report = await run_pass_with(client, cfg, now=NOW, notifier=n)
        await trio.to_thread.run_sync(entered.wait, 30)
        # The pass is over, its report written, and the hook is still blocked in its thread.
        assert report.aborted is None
        assert not release.is_set()
        assert n.sent == n.failed == 0
        assert n.statistics().delivering == 1
        release.set()
    assert n.sent == 1


async def test_a_full_queue_drops_and_counts_never_waits(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("trio_culler._notify.MAX_QUEUED", 1)
    monkeypatch.setattr("trio_culler._notify.DELIVERY_TASKS", 1)
    hub = idle_hub("ann", "bob", "cat", idle=50 * M)

    async def hook(user: dict[str, Any], server: dict[str, Any], cull_at: datetime) -> None:
        await trio.sleep_forever()

    cfg = config(timeout=3600, warn_before=900, warn_hook=hook, warn_servers=False)
    async with hub.running(), open_hub_client(cfg, transport=hub.transport()) as client, open_notifier(cfg) as n:
        assert n is not None
        # One delivery task, stuck in the hook with the first event; one event queued; the third dropped.
        start = trio.current_time()
        report = await run_pass_with(client, cfg, now=NOW, notifier=n)
        assert trio.current_time() - start < 1
        assert report.warning_events["warning"] == 3
        assert report.warnings_failed == 1


async def test_the_forecast_of_a_warned_server_is_the_time_announced(autojump_clock: trio.testing.MockClock) -> None:
    """The status page's "what comes next" and the warning say the same: the cull time announced, which a late
    warning sets later than the rule's."""
    hub = idle_hub("ann", idle=55 * M)  # its rule culls it at +5; warned at +0 with 15 minutes' notice
    hub.add_user("bob", servers={"": FakeServer("", started=NOW - 2 * 60 * M, last_activity=NOW - 10 * M)})
    cfg = config(timeout=3600, cull_every=300, warn_before=900, warn_url=WEBHOOK)
    async with culler(hub, cfg, Receiver()) as run:
        reports = [await run(NOW + minutes * M) for minutes in (0, 5, 10)]
    for report in reports:
        assert [(f.user, f.cull_at) for f in report.upcoming] == [("ann", NOW + 15 * M), ("bob", NOW + 50 * M)]


async def test_the_pass_summary_says_what_the_warnings_did(autojump_clock: trio.testing.MockClock) -> None:
    hub = idle_hub("ann", "bob", idle=50 * M)
    cfg = config(timeout=3600, cull_every=300, warn_before=900, warn_url=WEBHOOK, warn_servers=False)
    async with culler(hub, cfg, Receiver()) as run:
        first = await run(NOW)
        hub.users["bob"].servers[""].last_activity = NOW + M
        second = await run(NOW + 5 * M)
        third = await run(NOW + 15 * M)
    assert ", 2 warnings" in first.summary()
    assert first.log_fields()["warning_events"] == {"warning": 2, "cancelled": 0, "culled": 0}
    assert second.summary().endswith(", 1 cancelled")
    assert third.summary().endswith(", 1 culled")
