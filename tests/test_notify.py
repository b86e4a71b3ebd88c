"""Warnings before a cull: once per server per idle stretch, before the cull, never in a pass's way."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing

from trio_culler import Config, ConfigError, PassReport
from trio_culler._engine import run_pass_with
from trio_culler._hub import open_hub_client
from trio_culler._metrics import Metrics
from trio_culler._notify import DELIVERY_TIMEOUT, MAX_REMEMBERED, CullWarning, Notifier, open_notifier
from trio_culler.testing import FakeHub, FakeServer

from .support.faults import NOW, TOKEN
from .support.faults import make_config as config

M = timedelta(minutes=1)
WEBHOOK = "http://127.0.0.1:9/warn"


def warning(user: str = "u", server: str = "", due: datetime = NOW) -> CullWarning:
    return CullWarning(user=user, server=server, cull_at=due, reason="idle", idle_seconds=1.0)


def notifier(warn_before: float = 600) -> tuple[Notifier, trio.MemoryReceiveChannel[CullWarning]]:
    send, receive = trio.open_memory_channel[CullWarning](100)
    cfg = config(warn_before=warn_before, warn_url=WEBHOOK)
    return Notifier(cfg, send), receive


def queued(receive: trio.MemoryReceiveChannel[CullWarning]) -> list[CullWarning]:
    out = []
    while True:
        try:
            out.append(receive.receive_nowait())
        except trio.WouldBlock:
            return out


# --- The bookkeeping ------------------------------------------------------------------------------------------


def test_one_warning_per_stretch_and_activity_starts_a_new_one() -> None:
    n, receive = notifier(warn_before=600)
    due = NOW + 5 * M
    # Outside the window: nothing.
    assert n.hold(warning(due=due), due=due, now=NOW - 10 * M, culling=False) is None
    assert queued(receive) == []
    # Inside: one warning with the rule's time, and again nothing on the next passes.
    for now in (NOW, NOW + M, NOW + 2 * M):
        assert n.hold(warning(due=due), due=due, now=now, culling=False) is None
    [sent] = queued(receive)
    assert sent.cull_at == due
    # Due: culled without waiting (the notice was given) and without a second warning.
    assert n.hold(warning(due=due), due=due, now=due, culling=True) is None
    assert queued(receive) == []
    # Activity moved the cull time: a new stretch, a new warning.
    later = due + 30 * M
    assert n.hold(warning(due=later), due=later, now=later - M, culling=False) is None
    assert [w.cull_at for w in queued(receive)] == [later]


def test_a_server_due_before_its_warning_gets_the_full_notice() -> None:
    n, receive = notifier(warn_before=600)
    due = NOW - 60 * M  # overdue when the culler first sees it
    assert n.hold(warning(due=due), due=due, now=NOW, culling=True) == NOW + 10 * M
    [sent] = queued(receive)
    assert sent.cull_at == NOW + 10 * M
    assert n.hold(warning(due=due), due=due, now=NOW + 5 * M, culling=True) == NOW + 10 * M
    assert n.hold(warning(due=due), due=due, now=NOW + 10 * M, culling=True) is None
    assert queued(receive) == []


def test_state_is_forgotten_by_a_complete_pass_that_no_longer_sees_the_server() -> None:
    n, receive = notifier()
    n.hold(warning("a"), due=NOW, now=NOW, culling=False)
    n.hold(warning("b"), due=NOW, now=NOW, culling=False)
    assert n.statistics().remembered == 2
    n.end_pass(complete=True)
    n.hold(warning("a"), due=NOW, now=NOW, culling=False)
    n.end_pass(complete=False)  # an incomplete pass forgets nothing
    assert n.statistics().remembered == 2
    n.hold(warning("a"), due=NOW, now=NOW, culling=False)
    n.end_pass(complete=True)
    assert n.statistics().remembered == 1
    assert len(queued(receive)) == 2


def test_state_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("trio_culler._notify.MAX_REMEMBERED", 3)
    send, _receive = trio.open_memory_channel[CullWarning](0)
    n = Notifier(config(warn_before=600, dry_run=True, warn_url=WEBHOOK), send)
    for name in "abcde":
        n.hold(warning(name), due=NOW, now=NOW, culling=False)
    assert n.statistics().remembered == 3
    assert MAX_REMEMBERED >= 10_000


def test_a_full_queue_drops_and_counts_never_waits() -> None:
    send, _receive = trio.open_memory_channel[CullWarning](1)
    n = Notifier(config(warn_before=600, warn_url=WEBHOOK), send)
    n.hold(warning("a"), due=NOW, now=NOW, culling=False)
    n.hold(warning("b"), due=NOW, now=NOW, culling=False)
    assert n.failed == 1


def test_payload_is_the_documented_object() -> None:
    w = CullWarning(user="ü ser", server="gpu", cull_at=NOW, reason="max_age", idle_seconds=12.34567)
    assert w.payload() == {
        "user": "ü ser",
        "server": "gpu",
        "cull_at": "2026-11-25T12:00:00Z",
        "reason": "max_age",
        "idle_seconds": 12.346,
    }


def test_configuration_is_checked() -> None:
    with pytest.raises(ConfigError, match="--warn-before needs --warn-url"):
        config(warn_before=60)
    with pytest.raises(ConfigError, match="need --warn-before"):
        config(warn_url=WEBHOOK)
    with pytest.raises(ConfigError, match="--warn-url must be an http"):
        config(warn_before=60, warn_url="ftp://x")


# --- Through passes -------------------------------------------------------------------------------------------


def idle_hub(*names: str, idle: timedelta) -> FakeHub:
    hub = FakeHub(token=TOKEN, clock=lambda: NOW)
    for name in names:
        server = FakeServer("", started=NOW - idle - 60 * M, last_activity=NOW - idle)
        hub.add_user(name, created=NOW - 100 * 60 * M, last_activity=NOW - idle, servers={"": server})
    return hub


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


async def passes(
    hub: FakeHub, cfg: Config, times: list[datetime], receiver: Receiver, *, pause: float = 5
) -> list[PassReport]:
    reports = []
    async with (
        hub.running(),
        open_hub_client(cfg, transport=hub.transport()) as client,
        open_notifier(cfg, transport=httpx.MockTransport(receiver)) as n,
    ):
        for now in times:
            reports.append(await run_pass_with(client, cfg, now=now, notifier=n))
            await hub.wait_stops_done()
            await trio.sleep(pause)  # deliveries run beside the passes
        assert n is not None
        reports.append(await run_pass_with(client, cfg, now=times[-1], notifier=n))
    return reports


async def test_each_server_is_warned_once_before_its_cull(autojump_clock: trio.testing.MockClock) -> None:
    # 40 minutes idle; timeout 1 h; warn 15 min before. Pass at +0 (outside the window), +10 (inside:
    # warned), +12, +20 (culled), +21.
    hub = idle_hub("ann", "bob", idle=40 * M)
    hub.add_user("cat", created=NOW - 100 * M, servers={"": FakeServer("", started=NOW, last_activity=NOW)})
    receiver = Receiver()
    cfg = config(timeout=3600, warn_before=900, warn_url=WEBHOOK)
    times = [NOW, NOW + 10 * M, NOW + 12 * M, NOW + 20 * M, NOW + 21 * M]
    reports = await passes(hub, cfg, times, receiver)
    assert sorted(post["user"] for post in receiver.posts) == ["ann", "bob"]
    assert {post["cull_at"] for post in receiver.posts} == {"2026-11-25T12:20:00Z"}
    assert {post["reason"] for post in receiver.posts} == {"idle"}
    assert reports[1].warnings_sent + reports[2].warnings_sent == 2
    assert set(hub.statistics().stop_requests) == {("ann", ""), ("bob", "")}
    assert [sum(r.servers_culled.values()) for r in reports] == [0, 0, 0, 2, 0, 0]
    assert sum(r.warnings_sent for r in reports) == 2
    # Never the hub's token, nor any Authorization at all.
    assert all("authorization" not in headers for headers in receiver.headers)
    assert all(TOKEN not in str(headers) for headers in receiver.headers)


async def test_an_overdue_server_is_warned_then_culled_after_the_notice(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = idle_hub("ann", idle=5 * 60 * M)
    receiver = Receiver()
    cfg = config(timeout=3600, warn_before=600, warn_url=WEBHOOK)
    reports = await passes(hub, cfg, [NOW, NOW + 5 * M, NOW + 10 * M], receiver)
    assert [post["cull_at"] for post in receiver.posts] == ["2026-11-25T12:10:00Z"]
    assert [sum(r.servers_culled.values()) for r in reports] == [0, 0, 1, 0]


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
    assert sorted(calls) == ["ann", "bob"]
    assert first.warnings_failed + second.warnings_failed == 2
    assert set(hub.statistics().stop_requests) == {("ann", ""), ("bob", "")}
    metrics = Metrics()
    for report in (first, second):
        metrics.observe(report)
    assert metrics.registry.get_sample_value("trio_culler_warnings_total", {"outcome": "failed"}) == 2
    assert metrics.registry.get_sample_value("trio_culler_warnings_total", {"outcome": "sent"}) == 0


async def test_the_webhook_is_retried_and_a_sync_hook_gets_the_models(monkeypatch: pytest.MonkeyPatch) -> None:
    # The real clock: a sync hook runs in a thread, which an autojump clock would not wait for.
    monkeypatch.setattr("trio_culler._notify.POST_BACKOFF", 0.01)
    hub = idle_hub("ann", idle=50 * M)
    receiver = Receiver(statuses=[503, 502])
    seen: list[tuple[str, str, datetime]] = []

    def hook(user: dict[str, Any], server: dict[str, Any], cull_at: datetime) -> None:
        seen.append((user["name"], server["url"], cull_at))

    cfg = config(timeout=3600, warn_before=900, warn_url=WEBHOOK, warn_hook=hook)
    await passes(hub, cfg, [NOW], receiver, pause=0)
    # Leaving open_notifier waited for the delivery: two refusals, then the POST that got through.
    assert len(receiver.headers) == 3
    assert [post["user"] for post in receiver.posts] == ["ann"]
    assert seen == [("ann", "/user/ann/", NOW + 10 * M)]


async def test_a_webhook_that_refuses_is_counted_failed(autojump_clock: trio.testing.MockClock) -> None:
    hub = idle_hub("ann", idle=50 * M)
    receiver = Receiver(statuses=[404])
    cfg = config(timeout=3600, warn_before=900, warn_url=WEBHOOK)
    reports = await passes(hub, cfg, [NOW], receiver)
    assert receiver.posts == []
    assert sum(r.warnings_failed for r in reports) == 1


async def test_dry_run_warns_nobody(autojump_clock: trio.testing.MockClock) -> None:
    hub = idle_hub("ann", idle=50 * M)
    receiver = Receiver()
    cfg = attrs.evolve(config(timeout=3600, warn_before=900, warn_url=WEBHOOK), dry_run=True)
    await passes(hub, cfg, [NOW], receiver)
    assert receiver.headers == []


async def test_a_blocking_sync_hook_runs_beside_the_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    # The real clock: the hook blocks a thread, and the pass must finish while it is still blocked.
    monkeypatch.setattr("trio_culler._notify.DELIVERY_TIMEOUT", 5.0)
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
        release.set()
    assert n.sent == 1


async def test_a_server_due_exactly_warn_before_from_now_is_warned_in_this_pass(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Idle 45 minutes, timeout 1 h: due in 15 minutes, exactly --warn-before. The window includes its edge.
    hub = idle_hub("ann", idle=45 * M)
    receiver = Receiver()
    cfg = config(timeout=3600, warn_before=900, warn_url=WEBHOOK)
    reports = await passes(hub, cfg, [NOW], receiver)  # one pass at NOW (and a second at NOW to collect)
    assert [(post["user"], post["cull_at"]) for post in receiver.posts] == [("ann", "2026-11-25T12:15:00Z")]
    assert [sum(r.servers_culled.values()) for r in reports] == [0, 0]
