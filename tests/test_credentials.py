"""Per-server credentials: each server is shown a token of its own user's, for it alone, never the culler's; the
tokens are reused, renewed, revoked, bounded, and a server whose token cannot be had is never culled for
idleness. Against FakeHub (its tokens endpoints check what JupyterHub checks), on trio's autojump clock."""

from __future__ import annotations

import json
import logging
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing

from trio_culler import Config, PassReport
from trio_culler._credentials import (
    MIN_LIFETIME,
    REVOKE_ON_STOP,
    CredentialUnavailable,
    ServerCredentials,
    default_lifetime,
    open_server_credentials,
    server_scope,
)
from trio_culler._explain import run_explain
from trio_culler._hub import open_hub_client
from trio_culler._service import Culler
from trio_culler.testing import FakeHub, FakeKernel, FakeServer
from trio_culler.testing._permissions import FULL_SCOPES

from .support.passes import cull

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TOKEN = "credentials-test-token-0123456789abcdef"
URL = "http://127.0.0.1:8081/hub/api"
PUBLIC = "http://proxy.test"
H = timedelta(hours=1)


def config(**changes: Any) -> Config:
    base = Config(api_token=TOKEN, url=URL, timeout=3600, inspect_kernels=True, public_url=PUBLIC)
    return attrs.evolve(base, **changes)


def server(name: str = "", *, idle: timedelta = 2 * H, busy: bool = False, started: timedelta = 5 * H) -> FakeServer:
    kernel = FakeKernel("k", "busy" if busy else "idle", NOW - idle)
    return FakeServer(name, started=NOW - started, last_activity=NOW - idle, kernels=[kernel])


def make_hub(*, now: datetime = NOW, **options: Any) -> FakeHub:
    return FakeHub(token=TOKEN, clock=lambda: now, **options)


def stopped(hub: FakeHub) -> set[tuple[str, str]]:
    return set(hub.statistics().stop_requests)


class Recorder:
    """A fault hook that records the credential every single-user request carried."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response | None:
        if request.url.path.startswith("/user/"):
            self.seen.append((request.url.path, request.headers.get("authorization")))
        return None


# -- whose token a server sees -----------------------------------------------------------------------------


async def test_each_server_sees_its_own_users_token_for_it_alone_and_never_the_cullers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The culler's role holds access:servers too: the fake servers would accept its own token, so only the
    # culler's choice keeps it from them.
    hub = make_hub(scopes=(*FULL_SCOPES, "access:servers"))
    hub.add_user("alice", servers={"": server(busy=True), "lab": server("lab")})
    hub.add_user("bob", servers={"": server()})
    hub.add_user("carol", servers={"": server(busy=True)})
    record = Recorder()
    hub.fault = record
    minted: list[dict[str, Any]] = []
    real_handle = hub.handle

    async def keep_mints(request: httpx.Request) -> httpx.Response:
        response = await real_handle(request)
        if request.method == "POST" and request.url.path.endswith("/tokens"):
            body = json.loads(request.content)
            minted.append({**body, "user": request.url.path.split("/")[-2], "answer": json.loads(response.content)})
        return response

    hub.handle = keep_mints  # type: ignore[method-assign]
    report = await cull(hub, config())
    assert report.ok, report.summary()
    assert stopped(hub) == {("alice", "lab"), ("bob", "")}
    assert hub.statistics().server_credentials == {"own": 8}  # each inspection asks api/kernels and api/status
    assert all(header != f"token {TOKEN}" for _path, header in record.seen)
    # Each mint asked for exactly the one server it was for, with a lifetime and a note.
    assert sorted(mint["scopes"][0] for mint in minted) == [
        "access:servers!server=alice/",
        "access:servers!server=alice/lab",
        "access:servers!server=bob/",
        "access:servers!server=carol/",
    ]
    assert {mint["expires_in"] for mint in minted} == {MIN_LIFETIME}
    assert all("trio-culler" in mint["note"] for mint in minted)
    # ... and the token each server was shown is the one minted for it.
    by_scope = {mint["scopes"][0]: mint["answer"]["token"] for mint in minted}
    for path, header in record.seen:
        owner, _, rest = path.removeprefix("/user/").partition("/")
        name = "" if rest.startswith("api/") else rest.partition("/")[0]
        assert header == f"token {by_scope[server_scope(owner, name)]}", path
    # run_pass's tokens are revoked when it ends: the culled servers' at once, the others at the end.
    assert hub.statistics().tokens_live == 0
    assert hub.statistics().tokens_revoked == 4


async def test_a_mutant_that_sends_the_cullers_own_token_is_caught(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The test above would pass vacuously if the servers took whatever they were shown: with the culler's own
    token sent (and access:servers on its role), the servers accept it, and the count says "hub". The request
    engine refuses the culler's own token as a credential for a server; the mutant switches that guard off too."""
    from trio_culler import _engine

    real = _engine.inspect_through

    async def leaky(hub: Any, server: Any, cfg: Config, *, token: str) -> Any:
        hub.http._token = "not the culler's token"  # the engine's own guard, off
        return await real(hub, server, cfg, token=TOKEN)

    monkeypatch.setattr(_engine, "inspect_through", leaky)
    hub = make_hub(scopes=(*FULL_SCOPES, "access:servers"))
    hub.add_user("alice", servers={"": server(busy=True)})
    await cull(hub, config())
    assert hub.statistics().server_credentials == {"hub": 2}  # each inspection asks api/kernels and api/status


# -- reuse, renewal, revocation ------------------------------------------------------------------------------


async def run_culler(hub: FakeHub, cfg: Config, *, passes: int, between: Any = None) -> list[PassReport]:
    """A long-running culler for ``passes`` passes (``between(i)`` is called after pass i), then stopped."""
    reports: list[PassReport] = []
    send, receive = trio.open_memory_channel[PassReport](math.inf)
    culler = Culler(cfg, transport=hub.transport(), reporters=[send.send_nowait])
    async with hub.running(), trio.open_nursery() as nursery:
        nursery.start_soon(culler.serve)
        for i in range(passes):
            reports.append(await receive.receive())
            await hub.wait_stops_done()
            if between is not None:
                between(i)
        culler.stop(grace=0)
    return reports


async def test_tokens_are_reused_across_passes_renewed_before_expiry_and_revoked_when_done(
    autojump_clock: trio.testing.MockClock,
) -> None:
    now = datetime.now(UTC)  # a long-running culler measures idleness from the wall clock
    hub = make_hub(now=now)
    for i in range(5):
        hub.add_user(f"busy{i}", servers={"": FakeServer("", now - 5 * H, now - 2 * H, kernels=busy_kernels(now))})
    hub.add_user("idle", servers={"": FakeServer("", now - 5 * H, now - 2 * H, kernels=[])})
    cfg = config(cull_every=600)
    lifetime, renew_before = default_lifetime(cfg)
    assert lifetime == 3 * 600 + renew_before, "three passes and the margin"
    counts: list[tuple[int, int, int]] = []

    def snapshot(_pass: int) -> None:
        stats = hub.statistics()
        counts.append((stats.tokens_minted, stats.tokens_revoked, stats.requests_by_kind["kernels"]))

    reports = await run_culler(hub, cfg, passes=5, between=snapshot)
    assert all(report.ok for report in reports), [r.summary() for r in reports]
    # Pass 1: six servers, six tokens; the idle one is culled and its token revoked at once.
    assert counts[0] == (6, 1, 6)
    # Passes 2 and 3: the five busy servers are asked again with the same tokens.
    assert counts[1] == (6, 1, 11)
    assert counts[2] == (6, 1, 16)
    # Pass 4 (1800 s after the first): less than the margin left, so each is renewed and the old one revoked.
    assert counts[3] == (11, 6, 21)
    assert counts[4] == (11, 6, 26)
    # Stopping revokes every token left.
    stats = hub.statistics()
    assert (stats.tokens_minted, stats.tokens_revoked, stats.tokens_live) == (11, 11, 0)
    assert stats.server_credentials == {"own": 52}  # each inspection asks api/kernels and api/status


def busy_kernels(now: datetime) -> list[FakeKernel]:
    return [FakeKernel("k", "busy", now - 2 * H)]


async def test_a_complete_pass_revokes_the_tokens_of_servers_it_no_longer_asked(
    autojump_clock: trio.testing.MockClock,
) -> None:
    now = datetime.now(UTC)
    hub = make_hub(now=now)
    for name in ("stays", "leaves", "wakes"):
        hub.add_user(name, servers={"": FakeServer("", now - 5 * H, now - 2 * H, kernels=busy_kernels(now))})
    failing = False
    revoked: list[int] = []

    async def fault(request: httpx.Request) -> httpx.Response | None:
        return httpx.Response(500) if failing and request.url.path.endswith("/users") else None

    hub.fault = fault

    def between(i: int) -> None:
        nonlocal failing
        revoked.append(hub.statistics().tokens_revoked)
        if i == 0:
            # "leaves" stops its server by itself; "wakes" is used again (the hub sees it active). A page that
            # fails makes pass 2 incomplete: nothing may be concluded from it.
            del hub.users["leaves"].servers[""]
            hub.users["wakes"].servers[""].last_activity = datetime.now(UTC)
            failing = True
        if i == 1:
            failing = False

    reports = await run_culler(hub, config(cull_every=600, max_retries=0), passes=3, between=between)
    assert reports[1].pages_failed
    assert not reports[2].pages_failed
    # Nothing revoked after the incomplete pass; after the complete one, the two tokens it did not use.
    assert revoked == [0, 0, 2]
    assert {token.user for token in hub.live_tokens()} == set(), "and the last one when the culler stopped"
    stats = hub.statistics()
    assert (stats.tokens_minted, stats.tokens_revoked) == (3, 3)
    assert stats.server_credentials == {"own": 8}  # each inspection asks api/kernels and api/status


async def test_the_pass_does_not_revoke_before_it_is_complete(autojump_clock: trio.testing.MockClock) -> None:
    now = datetime.now(UTC)
    hub = make_hub(now=now)
    hub.add_user("a", servers={"": FakeServer("", now - 5 * H, now - 2 * H, kernels=busy_kernels(now))})
    live: list[int] = []

    def between(i: int) -> None:
        if i == 0:
            hub.users["a"].servers[""].last_activity = datetime.now(UTC)  # not worth asking any more
        live.append(hub.statistics().tokens_live)

    await run_culler(hub, config(cull_every=600), passes=2, between=between)
    assert live == [1, 0], "kept after the pass that used it, revoked after the complete pass that did not"


async def test_stopping_revokes_every_token_within_a_bound_even_when_the_hub_hangs(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    now = datetime.now(UTC)
    hub = make_hub(now=now)
    for i in range(4):
        hub.add_user(f"u{i}", servers={"": FakeServer("", now - 5 * H, now - 2 * H, kernels=busy_kernels(now))})
    hang_revokes = False

    async def fault(request: httpx.Request) -> httpx.Response | None:
        if hang_revokes and request.method == "DELETE" and "/tokens/" in request.url.path:
            if request.url.path.startswith("/hub/api/users/u0/"):
                return None  # one is revoked, the others hang
            await trio.sleep_forever()
        return None

    hub.fault = fault

    def between(_i: int) -> None:
        nonlocal hang_revokes
        hang_revokes = True

    passed = trio.Event()
    culler = Culler(config(cull_every=600), transport=hub.transport(), reporters=[lambda _report: passed.set()])
    async with hub.running(), trio.open_nursery() as nursery:
        nursery.start_soon(culler.serve)
        await passed.wait()
        assert hub.statistics().tokens_live == 4
        between(0)
        stopping = trio.current_time()
        with caplog.at_level(logging.INFO, logger="trio_culler"):
            culler.stop(grace=0)
    assert trio.current_time() - stopping == pytest.approx(REVOKE_ON_STOP, abs=0.1)
    assert hub.statistics().tokens_revoked == 1
    assert "Revoked 1 of 4 per-server tokens on the way out; the others expire within" in caplog.text


# -- one mint at a time, bounded memory ------------------------------------------------------------------------


async def test_two_tasks_asking_for_one_server_at_once_share_one_mint(autojump_clock: trio.testing.MockClock) -> None:
    hub = make_hub()
    hub.add_user("alice", servers={"": server()})

    async def slow_mint(request: httpx.Request) -> httpx.Response | None:
        if request.method == "POST":
            await trio.sleep(5)
        return None

    hub.fault = slow_mint
    tokens: list[str] = []
    async with open_hub_client(config(), transport=hub.transport()) as client:
        credentials = ServerCredentials(client, lifetime=600, renew_before=60)

        async def ask() -> None:
            tokens.append(await credentials.for_server("alice", ""))

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(ask)
    assert len(tokens) == 3
    assert len(set(tokens)) == 1
    assert hub.statistics().requests_by_kind["mint"] == 1
    assert (credentials.statistics().minted, credentials.statistics().reused) == (1, 2)


async def test_a_failed_mint_is_the_failure_of_every_task_waiting_for_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = make_hub()
    hub.add_user("alice", servers={"": server()}, scopes=["read:users!user=alice"])

    async def slow(request: httpx.Request) -> httpx.Response | None:
        await trio.sleep(1)
        return None

    hub.fault = slow
    failures: list[str] = []
    async with open_hub_client(config(), transport=hub.transport()) as client:
        credentials = ServerCredentials(client, lifetime=600, renew_before=60)

        async def ask() -> None:
            with pytest.raises(CredentialUnavailable) as failed:
                await credentials.for_server("alice", "")
            failures.append(failed.value.reason)

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(ask)
    assert failures == ["refused"] * 3
    # The first ask and its one retry at the hub's maximum lifetime; the waiters asked nothing.
    assert hub.statistics().requests_by_kind["mint"] == 2


async def test_the_store_is_bounded_and_what_falls_out_is_revoked(autojump_clock: trio.testing.MockClock) -> None:
    hub = make_hub()
    for i in range(5):
        hub.add_user(f"u{i}", servers={"": server()})
    async with open_hub_client(config(), transport=hub.transport()) as client:
        credentials = ServerCredentials(client, lifetime=600, renew_before=60, max_tokens=3)
        for i in range(5):
            await credentials.for_server(f"u{i}", "")
        await credentials.for_server("u2", "")  # used again: the most recent
        await credentials.for_server("u0", "")  # had fallen out: minted again, and u3 (least recent) falls out
        assert credentials.statistics().held == 3
    stats = hub.statistics()
    assert (stats.tokens_minted, stats.tokens_revoked, stats.tokens_live) == (6, 3, 3)
    assert {token.user for token in hub.live_tokens()} == {"u4", "u2", "u0"}


# -- a server whose credential cannot be had -------------------------------------------------------------------


def refusing_hub(kind: str) -> FakeHub:
    hub = make_hub()
    for i in range(3):
        hub.add_user(f"busy{i}", servers={"": server(busy=True)}, scopes=["read:users"] if kind == "role" else None)
    # Past --max-age: culled whatever its kernels say, so it needs no token.
    hub.add_user("old", servers={"": server(busy=True, started=30 * H)}, scopes=["read:users"])

    async def fault(request: httpx.Request) -> httpx.Response | None:
        if not (request.method == "POST" and request.url.path.endswith("/tokens")):
            return None
        if kind == "forbidden":
            return httpx.Response(403, json={"message": "Action is not authorized; requires any of [tokens]"})
        if kind == "down":
            raise httpx.ConnectError("Connection refused")
        return None

    hub.fault = fault
    return hub


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("role", "refused"), ("forbidden", "forbidden"), ("down", "unavailable")],
    ids=["role-does-not-reach-own-server", "403", "hub-down"],
)
async def test_a_server_without_a_credential_is_kept_counted_and_said_once(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture, kind: str, reason: str
) -> None:
    hub = refusing_hub(kind)
    with caplog.at_level(logging.DEBUG, logger="trio_culler"):
        report = await cull(hub, config(max_age=24 * 3600, max_retries=1))
    assert stopped(hub) == {("old", "")}, "max-age still applies; idleness is never judged without a look"
    assert report.errors_by_kind == {"credential": 3}
    assert not report.ok
    assert report.servers_inspected == 0
    stats = hub.statistics()
    assert stats.requests_by_kind["kernels"] == 0, "never a fallback to the culler's own token"
    assert stats.server_credentials == {}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "credential" in r.msg]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("No credential to inspect server busy")
    assert "not culling it for idleness in this pass" in warnings[0]
    assert {getattr(r, "credential_failure", None) for r in caplog.records} >= {reason}


async def test_each_kind_of_credential_failure_is_said_once_per_pass(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    hub = make_hub()
    for i in range(3):
        hub.add_user(f"locked{i}", servers={"": server(busy=True)}, scopes=["read:users"])
        hub.add_user(f"cut{i}", servers={"": server(busy=True)})

    async def fault(request: httpx.Request) -> httpx.Response | None:
        if request.method == "POST" and request.url.path.startswith("/hub/api/users/cut"):
            return httpx.Response(403)
        return None

    hub.fault = fault
    with caplog.at_level(logging.WARNING, logger="trio_culler"):
        report = await cull(hub, config())
    assert report.errors_by_kind == {"credential": 6}
    lines = [r for r in caplog.records if r.getMessage().startswith("No credential")]
    assert sorted(r.credential_failure for r in lines) == ["forbidden", "refused"]  # type: ignore[attr-defined]
    assert stopped(hub) == set()


@pytest.mark.parametrize("concurrency", [1, 10])
async def test_a_hub_maximum_lifetime_is_learned_once(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture, concurrency: int
) -> None:
    now = datetime.now(UTC)
    hub = make_hub(now=now, token_expires_in_max_seconds=900)
    for i in range(4):
        hub.add_user(f"u{i}", servers={"": FakeServer("", now - 5 * H, now - 2 * H, kernels=busy_kernels(now))})
    asked: list[object] = []

    async def fault(request: httpx.Request) -> httpx.Response | None:
        if request.method == "POST":
            asked.append(json.loads(request.content)["expires_in"])
        return None

    hub.fault = fault
    with caplog.at_level(logging.WARNING, logger="trio_culler"):
        reports = await run_culler(hub, config(cull_every=600, concurrency=concurrency), passes=1)
    assert reports[0].ok, reports[0].summary()
    lifetime, _renew = default_lifetime(config(cull_every=600))
    if concurrency == 1:
        assert asked == [lifetime, None, 900, 900, 900], "refused once, then the hub's maximum, then that"
    else:
        # Mints set out together with the default lifetime: one learns the maximum, the others wait for it and
        # ask again within it (how many set out before the lesson depends on the pager's pace).
        assert (asked.count(None), asked.count(900)) == (1, 3), asked
        assert 1 <= asked.count(lifetime) <= 4, asked
        assert len(asked) == 4 + asked.count(lifetime), "each server is refused at most once"
    assert hub.statistics().tokens_minted == 4
    lines = [r.getMessage() for r in caplog.records if "token_expires_in_max_seconds" in r.getMessage()]
    assert lines == [f"The hub refused per-server tokens living {lifetime} s (its token_expires_in_max_seconds is "
                     "lower); they live 900 s from now on"]  # fmt: skip


async def test_a_400_from_a_hub_without_maximum_leaves_no_token_behind(autojump_clock: trio.testing.MockClock) -> None:
    """A hub that refused the scopes, then answers ``expires_in: null`` with a token (its role changed in between,
    say): that token never expires, so it is revoked at once, and the server is not inspected."""
    hub = make_hub()
    hub.add_user("alice", servers={"": server(busy=True)})
    answers = iter([httpx.Response(400, json={"message": "Not assigning requested scopes"})])

    async def fault(request: httpx.Request) -> httpx.Response | None:
        return next(answers, None) if request.method == "POST" else None

    hub.fault = fault
    report = await cull(hub, config())
    assert report.errors_by_kind == {"credential": 1}
    assert stopped(hub) == set()
    stats = hub.statistics()
    assert (stats.tokens_minted, stats.tokens_revoked, stats.tokens_live) == (1, 1, 0)
    assert stats.requests_by_kind["kernels"] == 0


@pytest.mark.parametrize(
    "scopes",
    [["admin:users"], ["access:servers!server=alice/", "read:users"], None],
    ids=["other-scope", "unfiltered-extra", "no-scopes-listed"],
)
async def test_a_token_that_reaches_more_than_its_server_is_revoked_and_never_shown(
    autojump_clock: trio.testing.MockClock, scopes: list[str] | None
) -> None:
    hub = make_hub()
    hub.add_user("alice", servers={"": server(busy=True)})
    real_handle = hub.handle

    async def broad(request: httpx.Request) -> httpx.Response:
        response = await real_handle(request)
        if request.method == "POST" and response.status_code == 201:
            model = json.loads(response.content)
            if scopes is None:
                del model["scopes"]
            else:
                model["scopes"] = scopes
            return httpx.Response(201, json=model)
        return response

    hub.handle = broad  # type: ignore[method-assign]
    report = await cull(hub, config())
    assert report.errors_by_kind == {"credential": 1}
    assert report.errors[0].message.startswith("the hub granted a token for alice more than its server")
    assert stopped(hub) == set()
    assert hub.statistics().tokens_live == 0
    assert hub.statistics().requests_by_kind["kernels"] == 0


# -- secrets ----------------------------------------------------------------------------------------------------


async def test_a_server_that_echoes_its_token_never_gets_it_into_a_log_or_report(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    hub = make_hub()
    hub.add_user("mallory", servers={"": server()})
    shown: list[str] = []

    async def echo(request: httpx.Request) -> httpx.Response | None:
        if request.url.path.startswith("/user/"):
            header = request.headers["authorization"]
            shown.append(header.split(" ", 1)[1])
            return httpx.Response(500, json={"message": f"you sent {header}"})
        return None

    hub.fault = echo
    with caplog.at_level(logging.DEBUG):
        report = await cull(hub, config(max_retries=0))
    assert report.inspection_failures == {"status": 1}
    assert shown, "the server was asked"
    text = caplog.text + report.summary() + repr(report)
    # What a user's server writes is never quoted (so neither is the token it echoes); its status is.
    assert "-> 500" in caplog.text
    assert "you sent" not in text
    for token in shown:
        assert token not in text


def test_a_minted_token_is_not_in_its_repr() -> None:
    from trio_culler._hub import MintedToken

    minted = MintedToken("s3cret-token-value-0123456789", "a1", None, None, frozenset())
    assert "s3cret" not in repr(minted)


# -- --explain asks with a token of the user's, and revokes it ----------------------------------------------


async def test_explain_inspects_with_the_servers_own_token_and_revokes_it() -> None:
    import io

    hub = make_hub(now=datetime.now(UTC))
    now = datetime.now(UTC)
    hub.add_user("alice", servers={"": FakeServer("", now - 5 * H, now - 2 * H, kernels=busy_kernels(now))})
    out = io.StringIO()
    async with hub.running():
        status = await run_explain(config(), "alice", out=out, json_format=True, transport=hub.transport())
    assert status == 0, out.getvalue()
    assert json.loads(out.getvalue())["servers"][0]["signals"]["kernels"]["busy"] is True
    stats = hub.statistics()
    assert stats.server_credentials == {"own": 2}  # each inspection asks api/kernels and api/status
    assert (stats.tokens_minted, stats.tokens_revoked) == (1, 1)


async def test_open_server_credentials_for_one_pass(autojump_clock: trio.testing.MockClock) -> None:
    hub = make_hub()
    hub.add_user("alice", servers={"": server()})
    async with open_hub_client(config(), transport=hub.transport()) as client:
        async with open_server_credentials(client, config(), lifetime=MIN_LIFETIME) as credentials:
            await credentials.for_server("alice", "")
            assert hub.statistics().tokens_live == 1
        assert hub.statistics().tokens_live == 0
