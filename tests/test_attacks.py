"""Attacks on the culler found by reading its code as a user (or a visitor) would, each with what it did before
and what the culler does now. docs/security.md names these tests, beside the older ones that show the rest of
the threat model.

Against FakeHub on trio's autojump clock, or real loopback sockets where the bytes on the wire are the attack.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import trio
import trio.testing

from trio_culler import Config, PassReport
from trio_culler._service import Culler
from trio_culler.testing import FakeHub, FakeKernel, FakeServer

TOKEN = "attacks-test-token-0123456789abcdef"
URL = "http://127.0.0.1:8081/hub/api"
H = timedelta(hours=1)


def inspecting(**changes: Any) -> Config:
    config = Config(
        api_token=TOKEN, url=URL, timeout=3600, cull_every=600, inspect_kernels=True, public_url="http://proxy.test"
    )
    return attrs.evolve(config, **changes)


async def run_culler(
    hub: FakeHub, config: Config, *, passes: int, between: Callable[[int], None] | None = None
) -> list[PassReport]:
    """A long-running culler (its per-server tokens kept between passes) for ``passes`` passes, then stopped;
    ``between(i)`` runs after pass ``i``."""
    reports: list[PassReport] = []
    send, receive = trio.open_memory_channel[PassReport](math.inf)
    culler = Culler(config, transport=hub.transport(), reporters=[send.send_nowait])
    async with hub.running(), trio.open_nursery() as nursery:
        nursery.start_soon(culler.serve)
        for i in range(passes):
            reports.append(await receive.receive())
            await hub.wait_stops_done()
            if between is not None:
                between(i)
        culler.stop(grace=0)
    return reports


def busy_server(now: datetime) -> FakeServer:
    return FakeServer("", now - 5 * H, now - 2 * H, kernels=[FakeKernel("k", "busy", now - 2 * H)])


# -- a user revokes the culler's per-server token ------------------------------------------------------------


async def test_a_per_server_token_its_user_revoked_is_replaced_at_once(autojump_clock: trio.testing.MockClock) -> None:
    """The per-server token is its user's: they see it on their token page, with its note, and may revoke it.
    Before, the culler went on showing the revoked token until its renewal (three passes), and the server was
    kept, an error at each of them: a user who revoked each new token kept an idle server forever (up to
    --max-age), and an honest one who cleaned up their tokens kept theirs for an hour and a half by accident.
    Now a refused token is revoked and replaced at once, and the pass goes on with the new one."""
    now = datetime.now(UTC)  # a long-running culler measures idleness from the wall clock
    hub = FakeHub(token=TOKEN, clock=lambda: now)
    hub.add_user("alice", servers={"": busy_server(now)})

    def revoke_and_go_idle(i: int) -> None:
        if i == 0:
            (token,) = hub.live_tokens()
            assert token.user == "alice"
            revoked = hub._tokens.revoke("alice", token.id, at=trio.current_time())  # as her token page does
            assert revoked.status_code == 204
            hub.users["alice"].servers[""].kernels = [FakeKernel("k", "idle", now - 2 * H)]

    reports = await run_culler(hub, inspecting(), passes=2, between=revoke_and_go_idle)
    first, second = reports
    assert first.ok, first.summary()
    assert first.servers_culled == {}, "a busy kernel spares it"
    assert second.ok, second.summary()
    assert dict(second.servers_culled) == {"idle": 1}, "culled in the first pass after the revocation"
    stats = hub.statistics()
    # Shown the revoked token once (which the server refused), then the new one.
    assert stats.server_credentials == {"own": 2, "other": 1}
    assert stats.tokens_minted == 2
    assert hub.live_tokens() == ()


async def test_a_server_that_refuses_every_token_costs_one_mint_a_pass_and_is_kept(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The other side of replacing a refused token: a server that refuses whatever it is shown (its user's code
    answering 403) is asked once more with a new token, no more, and kept as any refusal is."""
    now = datetime.now(UTC)
    hub = FakeHub(token=TOKEN, clock=lambda: now)
    hub.add_user("mallory", servers={"": FakeServer("", now - 5 * H, now - 2 * H, kernels=[])})
    hub.server_access = False
    reports = await run_culler(hub, inspecting(), passes=3)
    for report in reports:
        assert report.servers_culled == {}, "never culled because the culler could not look"
        assert dict(report.errors_by_kind) == {"inspection": 1}
    stats = hub.statistics()
    assert stats.tokens_minted == 3 + 1, "the first token, then one new one a pass"
    assert stats.requests_by_kind["kernels"] == 2 * 3
    assert hub.live_tokens() == (), "every one revoked"
