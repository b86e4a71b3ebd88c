"""Shared pieces of the fault-injection tests: a config, a populated hub, the failures a hub or network can
produce, and the invariant every faulty pass must keep (idle servers stopped, active ones untouched, none twice)."""

from __future__ import annotations

import enum
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import attrs
import httpx
import trio

from trio_culler import Config
from trio_culler.testing import FakeHub, Population

__all__ = [
    "NOW",
    "SCOPES",
    "TOKEN",
    "URL",
    "Failure",
    "Fault",
    "assert_exact",
    "hub_answer",
    "inflict",
    "is_nested",
    "is_page",
    "make_config",
    "make_hub",
    "rewrite_pages",
]

#: Long and unusual, so that finding it in any output cannot be a coincidence.
TOKEN = "tok-7f3a91c2e5d84b06a1f9"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
#: In memory the URL is never dialled; it only has to look like the real thing.
URL = "http://127.0.0.1:8081/hub/api"
SCOPES = ("list:users", "read:users:activity", "read:servers", "delete:servers")

Fault = Callable[[httpx.Request], Awaitable[httpx.Response | None]]

# A fault that wants the hub's own answer calls hub.handle() again, which consults the fault hook again; this
# header marks that inner call (a shared flag would also wave through other requests running concurrently).
_NESTED = "x-faults-nested"


def make_config(**changes: Any) -> Config:
    return attrs.evolve(Config(api_token=TOKEN, url=URL, timeout=600), **changes)


def make_hub(
    n: int, *, idle: float, seed: int = 1, now: datetime = NOW, named_fraction: float = 0.0, **options: Any
) -> tuple[FakeHub, Population]:
    """``n`` users (``user-NN``, listed in that order), ``idle`` of their servers idle for hours, the rest
    active within the last minute; ``options`` go to FakeHub."""
    hub = FakeHub(token=TOKEN, clock=lambda: now, **options)
    return hub, hub.populate(n, idle_fraction=idle, seed=seed, now=now, named_fraction=named_fraction)


def lost_page_hub(*, now: datetime = NOW) -> tuple[FakeHub, Population, set[str], set[str]]:
    """30 users listed in pages of 10 whose first page is all active: nothing the pass stops comes before the
    page at offset 10, so no offset shifts and a loss of that page is exactly its ten users. (With idle users
    on the first page, their stops move later users forward, and the closing re-read of the first page may
    find the lost page's users after all.) Returns the hub, everyone as one population, the names on the
    page at offset 10 and the idle names after it."""
    hub = FakeHub(token=TOKEN, clock=lambda: now)
    active = hub.populate(10, idle_fraction=0.0, seed=1, now=now, name_prefix="active")
    idle = hub.populate(20, idle_fraction=1.0, seed=1, now=now, name_prefix="idle")
    everyone = Population(
        users=active.users + idle.users,
        idle=idle.idle,
        active=active.active,
        idle_users=idle.idle_users,
        admins=frozenset(),
    )
    return hub, everyone, set(idle.users[:10]), set(idle.users[10:])


class Failure(enum.Enum):
    """What can go wrong with one request, as the culler would see it on a real network."""

    REFUSED = "refused"
    RESET = "reset"
    TIMEOUT = "timeout"
    S500 = "500"
    S502 = "502"
    S503 = "503"
    S504 = "504"
    S429 = "429"
    S429_RETRY_AFTER = "429+Retry-After"

    @property
    def retry_after(self) -> float | None:
        return RETRY_AFTER if self is Failure.S429_RETRY_AFTER else None

    @property
    def error_kind(self) -> str:
        """The ``kind`` the culler records once it gives up."""
        return {Failure.REFUSED: "unavailable", Failure.RESET: "unavailable", Failure.TIMEOUT: "timeout"}.get(
            self, "status"
        )


RETRY_AFTER = 7.0


async def inflict(failure: Failure, request: httpx.Request, *, request_timeout: float) -> httpx.Response:
    """Fail ``request`` the way ``failure`` says: raise what httpx raises, or answer an error status."""
    if failure is Failure.REFUSED:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
    if failure is Failure.RESET:
        raise httpx.ReadError("[Errno 104] Connection reset by peer", request=request)
    if failure is Failure.TIMEOUT:
        # Far past the deadline: only the culler's own deadline can end this wait.
        await trio.sleep(request_timeout * 10)
        raise AssertionError("the request outlived its deadline")
    status = int(failure.value[:3])
    headers = {"Retry-After": f"{RETRY_AFTER:g}"} if failure.retry_after is not None else {}
    return httpx.Response(status, json={"status": status, "message": "injected"}, headers=headers)


def is_nested(request: httpx.Request) -> bool:
    return bool(request.headers.get(_NESTED) == "1")


async def hub_answer(hub: FakeHub, request: httpx.Request) -> httpx.Response:
    """What the hub itself answers to ``request`` (its state changes as usual), from inside a fault hook."""
    nested = httpx.Request(
        request.method,
        request.url,
        headers=[*request.headers.raw, (_NESTED.encode(), b"1")],
        content=await request.aread(),
    )
    return await hub.handle(nested)


def is_page(request: httpx.Request) -> bool:
    return request.method == "GET" and str(request.url.path).endswith("/users")


def rewrite_pages(hub: FakeHub, edit: Callable[[dict[str, Any]], None]) -> None:
    """Let the hub answer each ``GET /users``, then pass the page body through ``edit`` (malformed data)."""

    async def fault(request: httpx.Request) -> httpx.Response | None:
        if is_nested(request) or not is_page(request):
            return None
        response = await hub_answer(hub, request)
        body = json.loads(response.content)
        edit(body)
        return httpx.Response(200, json=body)

    hub.fault = fault


def assert_exact(
    hub: FakeHub,
    population: Population,
    *,
    also_idle: frozenset[tuple[str, str]] = frozenset(),
    asked_once: bool = False,
) -> None:
    """Every idle server stopped, no active one asked about, none stopped twice. ``also_idle``: servers a test
    added to the population later. ``asked_once``: no server was even asked twice (a pass without failures,
    where a second DELETE could only mean a user handled twice)."""
    stats = hub.statistics()
    if asked_once:
        assert [pair for pair, count in stats.stop_requests.items() if count > 1] == [], "a server asked twice"
    # A user missing from the hub was deleted (--cull-users), which its idle servers' stops had to precede.
    running = {(name, server) for name, user in hub.users.items() for server in user.servers}
    assert running & population.idle == set(), "idle servers left running"
    assert set(stats.stop_requests) & population.active == set(), "a DELETE was sent for an active server"
    assert population.active <= running, "an active server was stopped"
    completed = stats.stops_completed
    assert len(completed) == len(set(completed)), "a server was stopped twice"
    assert set(completed) == population.idle | also_idle
