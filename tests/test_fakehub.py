"""FakeHub reproduces the JupyterHub behaviours the culler depends on, on both of its paths."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import trio
import trio.testing
import trustme

from trio_culler.testing import FakeHub, FakeKernel, FakeServer, FakeTerminal, open_fake_hub
from trio_culler.testing._render import isoformat

T0 = datetime(2025, 1, 23, 16, 1, 47, 564284, tzinfo=UTC)
TOKEN = "fake-hub-token"
PAGINATED = {"Accept": "application/jupyterhub-pagination+json"}


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    # pytest-trio runs a test on any trio Clock fixture it is given
    return trio.testing.MockClock(autojump_threshold=0)


def client_for(hub: FakeHub, *, token: str | None = TOKEN) -> httpx.AsyncClient:
    headers = {"Authorization": f"token {token}"} if token is not None else {}
    return httpx.AsyncClient(transport=hub.transport(), base_url="http://hub.test/hub/api", headers=headers)


@asynccontextmanager
async def http_client(api_url: str, **kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    # trust_env=False: a proxy variable in the test environment must not capture loopback traffic
    async with httpx.AsyncClient(
        base_url=api_url, headers={"Authorization": f"Bearer {TOKEN}"}, trust_env=False, **kwargs
    ) as client:
        yield client


def running(name: str = "", *, ready: bool = True, pending: str | None = None, **kw: Any) -> FakeServer:
    return FakeServer(name, started=T0, last_activity=T0, ready=ready, pending=pending, **kw)


def add_running(hub: FakeHub, *names: str) -> None:
    for name in names:
        hub.add_user(name, servers={"": running()})


def names(body: Any) -> list[str]:
    items = body["items"] if isinstance(body, dict) else body
    return [item["name"] for item in items]


async def list_page(client: httpx.AsyncClient, **params: Any) -> Any:
    response = await client.get("/users", params=params, headers=PAGINATED)
    assert response.status_code == 200, response.text
    return response.json()


# --------------------------------------------------------------------------- version and auth


async def test_version_needs_no_token() -> None:
    async with client_for(FakeHub(version="4.1.6"), token=None) as client:
        response = await client.get("/")
    assert response.status_code == 200
    assert response.json() == {"version": "4.1.6"}
    assert response.headers["X-JupyterHub-Version"] == "4.1.6"


@pytest.mark.parametrize("header", [None, "token wrong", "Bearer wrong", "Basic fake-hub-token", "fake-hub-token"])
async def test_bad_credentials_get_403_json(header: str | None) -> None:
    hub = FakeHub()
    headers = {"Authorization": header} if header is not None else {}
    async with client_for(hub, token=None) as client:
        response = await client.get("/users", headers=headers)
    assert response.status_code == 403
    assert response.json()["status"] == 403
    assert response.json()["message"]


@pytest.mark.parametrize("scheme", ["token", "Bearer", "bearer"])
async def test_both_auth_schemes_accepted(scheme: str) -> None:
    async with client_for(FakeHub(), token=None) as client:
        response = await client.get("/users", headers={"Authorization": f"{scheme} {TOKEN}"})
    assert response.status_code == 200


async def test_unknown_routes_and_methods() -> None:
    async with client_for(FakeHub()) as client:
        missing = await client.get("/no/such/thing")
        outside = await client.get("http://hub.test/elsewhere")
        wrong_method = await client.post("/users")
    assert (missing.status_code, missing.json()["status"]) == (404, 404)
    assert outside.status_code == 404
    assert wrong_method.status_code == 405


async def test_any_prefix_ending_in_hub_api() -> None:
    hub = FakeHub()
    add_running(hub, "alice")
    async with client_for(hub) as client:
        response = await client.get("http://hub.test/prefix/deep/hub/api/users")
    assert names(response.json()) == ["alice"]


# --------------------------------------------------------------------------- listing


async def test_pagination_next_and_total() -> None:
    hub = FakeHub()
    add_running(hub, *(f"u{i}" for i in range(7)))
    async with client_for(hub) as client:
        first = await list_page(client, limit=3)
        assert names(first) == ["u0", "u1", "u2"]
        meta = first["_pagination"]
        assert (meta["offset"], meta["limit"], meta["total"]) == (0, 3, 7)
        assert (meta["next"]["offset"], meta["next"]["limit"]) == (3, 3)
        next_url = httpx.URL(meta["next"]["url"])
        assert (next_url.params["offset"], next_url.params["limit"]) == ("3", "3")
        assert names(await list_page(client, offset=3, limit=3)) == ["u3", "u4", "u5"]
        last = await list_page(client, offset=6, limit=3)
    assert names(last) == ["u6"]
    assert last["_pagination"]["next"] is None
    pages = hub.statistics().page_requests
    assert [(p.offset, p.limit, p.state, p.paginated) for p in pages] == [
        (0, 3, None, True),
        (3, 3, None, True),
        (6, 3, None, True),
    ]


async def test_limit_defaults_and_clamping() -> None:
    hub = FakeHub(default_page_size=5, max_page_size=10)
    add_running(hub, *(f"u{i:02d}" for i in range(30)))
    async with client_for(hub) as client:
        assert len((await list_page(client))["items"]) == 5
        assert (await list_page(client, limit=1000))["_pagination"]["limit"] == 10
        assert (await list_page(client, limit=0))["_pagination"]["limit"] == 1
        assert (await list_page(client, offset=-2, limit=2))["_pagination"]["offset"] == 2  # abs(), as the hub
        bad = await client.get("/users", params={"offset": "x"}, headers=PAGINATED)
    assert bad.status_code == 400


async def test_state_ready_filters_after_slicing() -> None:
    hub = FakeHub()
    add_running(hub, "r0")
    hub.add_user("s1", servers={"": running(ready=False, pending="spawn")})
    hub.add_user("s2", servers={"": running(ready=False, pending="spawn")})
    hub.add_user("idle")  # no server: not even active
    add_running(hub, "r3", "r4")
    async with client_for(hub) as client:
        first = await list_page(client, state="ready", limit=3)
        second = await list_page(client, state="ready", offset=3, limit=3)
    # The first page spans r0, s1, s2 of the active users; only r0 is ready, yet there is a next page.
    assert names(first) == ["r0"]
    assert first["_pagination"]["total"] == 5  # active users, counted before the ready filter
    assert first["_pagination"]["next"]["offset"] == 3
    assert names(second) == ["r3", "r4"]
    assert second["_pagination"]["next"] is None


async def test_state_filters() -> None:
    hub = FakeHub()
    add_running(hub, "a")
    hub.add_user("b")
    hub.add_user("c", servers={"": running(ready=False, pending="spawn")})
    async with client_for(hub) as client:
        assert names(await list_page(client, state="active")) == ["a", "c"]
        assert names(await list_page(client, state="inactive")) == ["b"]
        assert names(await list_page(client)) == ["a", "b", "c"]
        bad = await client.get("/users", params={"state": "running"})
    assert bad.status_code == 400
    assert "running" in bad.json()["message"]


async def test_plain_list_is_silently_truncated_without_the_header() -> None:
    hub = FakeHub(max_page_size=10)
    add_running(hub, *(f"u{i:02d}" for i in range(25)))
    async with client_for(hub) as client:
        response = await client.get("/users")
        after = await client.get("/users", params={"offset": 20})
    assert isinstance(response.json(), list)
    assert names(response.json()) == [f"u{i:02d}" for i in range(10)]
    assert names(after.json()) == [f"u{i:02d}" for i in range(20, 25)]
    assert hub.statistics().page_requests[0].paginated is False


async def test_old_hub_returns_everything_as_a_plain_list() -> None:
    hub = FakeHub(version="1.5.0", paginate=False, max_page_size=10)
    add_running(hub, *(f"u{i:02d}" for i in range(25)))
    hub.add_user("stopped")
    async with client_for(hub) as client:
        response = await client.get("/users", params={"state": "ready", "limit": 5}, headers=PAGINATED)
    assert names(response.json()) == [f"u{i:02d}" for i in range(25)]
    assert hub.statistics().page_requests[0].limit is None


async def test_offsets_shift_when_a_stop_completes() -> None:
    hub = FakeHub()
    add_running(hub, *(f"u{i}" for i in range(10)))
    async with client_for(hub) as client:
        assert names(await list_page(client, state="ready", limit=5)) == [f"u{i}" for i in range(5)]
        assert (await client.delete("/users/u0/server")).status_code == 204
        second = await list_page(client, state="ready", offset=5, limit=5)
    assert names(second) == ["u6", "u7", "u8", "u9"]  # u5 moved to offset 4: a forward pager skips it
    assert second["_pagination"]["total"] == 9


async def test_user_model_json() -> None:
    hub = FakeHub()
    whole_second = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    naive = datetime(2025, 1, 2, 3, 4, 5, 6)  # noqa: DTZ001 - naive timestamps are UTC, as in the hub
    hub.add_user(
        "alice",
        admin=True,
        created=whole_second,
        last_activity=T0,
        servers={"": running(), "lab": FakeServer("lab", started=naive, last_activity=None)},
    )
    hub.add_user("bob", created=None, servers={"": running(ready=False, pending="spawn")})
    async with client_for(hub) as client:
        alice, bob = (await list_page(client))["items"]
    assert alice["created"] == "2025-01-02T03:04:05Z"
    assert alice["last_activity"] == "2025-01-23T16:01:47.564284Z"
    assert alice["admin"] is True
    assert "admin" in alice["roles"]
    assert alice["groups"] == []
    assert alice["server"] == "/user/alice/"
    assert alice["pending"] is None
    lab = alice["servers"]["lab"]
    assert lab["started"] == "2025-01-02T03:04:05.000006Z"
    assert lab["last_activity"] is None
    assert lab["url"] == "/user/alice/lab/"
    assert (lab["ready"], lab["pending"], lab["stopped"], lab["user_options"]) == (True, None, False, {})
    assert lab["progress_url"].endswith("/servers/lab/progress")
    assert bob["server"] is None
    assert bob["pending"] == "spawn"
    assert bob["servers"][""]["ready"] is False
    assert bob["created"] is not None  # the hub's clock fills it in


# --------------------------------------------------------------------------- stopping servers


async def test_fast_stop_answers_204_after_the_latency(autojump_clock: trio.testing.MockClock) -> None:
    hub = FakeHub(stop_latency=3)
    add_running(hub, "alice")
    async with hub.running(), client_for(hub) as client:
        start = trio.current_time()
        response = await client.delete("/users/alice/server")
        assert response.status_code == 204
        assert trio.current_time() - start == pytest.approx(3)
        assert names(await list_page(client, state="inactive")) == ["alice"]
    assert hub.users["alice"].servers == {}
    assert hub.statistics().stops_completed == (("alice", ""),)


async def test_slow_stop_answers_202_then_completes(autojump_clock: trio.testing.MockClock) -> None:
    hub = FakeHub(stop_latency=30, slow_stop_timeout=10)
    add_running(hub, "alice", "bob")
    async with hub.running(), client_for(hub) as client:
        start = trio.current_time()
        response = await client.delete("/users/alice/server")
        assert response.status_code == 202
        assert trio.current_time() - start == pytest.approx(10)
        server = hub.users["alice"].servers[""]
        assert (server.pending, server.ready) == ("stop", False)
        # still active while stopping: offsets have not shifted yet
        assert names(await list_page(client, state="active")) == ["alice", "bob"]
        assert names(await list_page(client, state="ready")) == ["bob"]
        again = await client.delete("/users/alice/server")
        assert again.status_code == 202  # already stopping: 202 at once
        assert trio.current_time() - start == pytest.approx(10)
        await trio.sleep(21)  # past t=30, when the stop completes
        assert hub.users["alice"].servers == {}
        assert names(await list_page(client, state="active")) == ["bob"]
    stats = hub.statistics()
    assert stats.stop_requests == {("alice", ""): 2}
    assert stats.stops_completed == (("alice", ""),)


async def test_running_waits_for_stops_in_progress(autojump_clock: trio.testing.MockClock) -> None:
    hub = FakeHub(stop_latency=100)
    add_running(hub, "alice")
    async with hub.running(), client_for(hub) as client:
        assert (await client.delete("/users/alice/server")).status_code == 202
    assert hub.users["alice"].servers == {}
    assert trio.current_time() == pytest.approx(100)


async def test_slow_stop_without_background_nursery_runs_inline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = FakeHub(stop_latency=30)
    add_running(hub, "alice")
    async with client_for(hub) as client:
        response = await client.delete("/users/alice/server")
    assert response.status_code == 202
    assert trio.current_time() == pytest.approx(30)
    assert hub.users["alice"].servers == {}


async def test_per_server_stop_latency(autojump_clock: trio.testing.MockClock) -> None:
    hub = FakeHub(stop_latency=0)
    hub.add_user("slow", servers={"": running(stop_latency=60)})
    add_running(hub, "fast")
    async with hub.running(), client_for(hub) as client:
        assert (await client.delete("/users/fast/server")).status_code == 204
        assert (await client.delete("/users/slow/server")).status_code == 202


async def test_cancelled_stop_is_not_undone(autojump_clock: trio.testing.MockClock) -> None:
    hub = FakeHub(stop_latency=30)
    add_running(hub, "alice")
    async with client_for(hub) as client:
        with trio.move_on_after(5):
            await client.delete("/users/alice/server")
    assert hub.users["alice"].servers == {}


async def test_stop_status_codes() -> None:
    hub = FakeHub()
    hub.add_user("alice", servers={"": running(), "lab": running("lab"), "old": running("old", ready=False)})
    hub.add_user("bob")
    async with client_for(hub) as client:

        async def delete(path: str, **kwargs: Any) -> int:
            return (await client.request("DELETE", path, **kwargs)).status_code

        assert await delete("/users/nobody/server") == 404
        assert await delete("/users/alice/servers/nope") == 404
        assert await delete("/users/bob/server") == 204  # not running: nothing to do
        assert await delete("/users/alice/server", json={"remove": True}) == 400  # default server
        assert await delete("/users/alice/servers/", json={"remove": True}) == 400  # same, via /servers/
        assert await delete("/users/alice/servers/lab", content=b"{not json") == 400
        assert await delete("/users/alice/servers/lab") == 204
        assert hub.users["alice"].stopped_named == {"old", "lab"}
        assert await delete("/users/alice/servers/lab") == 204  # stopped but still exists
        assert await delete("/users/alice/servers/lab", json={"remove": True}) == 204
        assert hub.users["alice"].stopped_named == {"old"}
        assert await delete("/users/alice/servers/lab") == 404  # removed: gone
        assert await delete("/users/alice/server") == 204
    kinds = hub.statistics().requests_by_kind
    assert (kinds["stop"], kinds["remove"]) == (8, 3)


async def test_named_servers_disabled() -> None:
    hub = FakeHub(named_servers=False)
    hub.add_user("alice", servers={"": running(), "lab": running("lab")})
    async with client_for(hub) as client:
        named = await client.delete("/users/alice/servers/lab")
        default = await client.delete("/users/alice/server")
    assert named.status_code == 400
    assert "not enabled" in named.json()["message"]
    assert default.status_code == 204


async def test_remove_requested_while_stopping(autojump_clock: trio.testing.MockClock) -> None:
    hub = FakeHub(stop_latency=60)
    hub.add_user("alice", servers={"lab": running("lab")})
    async with hub.running(), client_for(hub) as client:
        assert (await client.delete("/users/alice/servers/lab")).status_code == 202
        remove = await client.request("DELETE", "/users/alice/servers/lab", json={"remove": True})
        assert remove.status_code == 202
    assert hub.users["alice"].servers == {}
    assert hub.users["alice"].stopped_named == set()


# --------------------------------------------------------------------------- deleting users


async def test_delete_user_rules(autojump_clock: trio.testing.MockClock) -> None:
    hub = FakeHub(stop_latency=30, delete_user_latency=2)
    add_running(hub, "alice")
    async with hub.running(), client_for(hub) as client:
        assert (await client.delete("/users/nobody")).status_code == 404
        active = await client.delete("/users/alice")
        assert active.status_code == 400
        assert (await client.delete("/users/alice/server")).status_code == 202
        stopping = await client.delete("/users/alice")
        assert stopping.status_code == 400
        assert "stopping" in stopping.json()["message"]
        await trio.sleep(30)
        before = trio.current_time()
        assert (await client.delete("/users/alice")).status_code == 204
        assert trio.current_time() - before == pytest.approx(2)
        assert "alice" not in hub.users
        assert (await client.delete("/users/alice")).status_code == 404
    stats = hub.statistics()
    assert stats.users_deleted == ("alice",)
    assert stats.requests_by_kind["delete_user"] == 5


# --------------------------------------------------------------------------- hostile names

HOSTILE = ["a#b", "a?x=1", "a b", "ä", "a%b", "a/b", "a;b", "a+b@c.d", "a%2Fb"]


def hostile_hub() -> FakeHub:
    hub = FakeHub()
    add_running(hub, "a", *HOSTILE)
    hub.users["a"].servers["a"] = running("a")
    return hub


async def check_hostile_stop(client: httpx.AsyncClient, hub: FakeHub, name: str) -> None:
    response = await client.delete(f"/users/{quote(name, safe='')}/server")
    assert response.status_code == 204
    stopped = {user.name for user in hub.users.values() if "" not in user.servers}
    assert stopped == {name}, "exactly the named user, not the one whose name is a prefix"
    fetched = await client.get(f"/users/{quote(name, safe='')}")
    assert fetched.json()["name"] == name


@pytest.mark.parametrize("name", HOSTILE)
async def test_hostile_names_are_decoded_once(name: str) -> None:
    hub = hostile_hub()
    async with client_for(hub) as client:
        await check_hostile_stop(client, hub, name)


async def test_hostile_server_names() -> None:
    hub = FakeHub()
    hub.add_user("a#b", servers={"a": running("a"), "a/b": running("a/b"), "a%b": running("a%b")})
    async with client_for(hub) as client:
        for server in ("a/b", "a%b"):
            path = f"/users/{quote('a#b', safe='')}/servers/{quote(server, safe='')}"
            assert (await client.delete(path)).status_code == 204
    assert set(hub.users["a#b"].servers) == {"a"}
    assert hub.users["a#b"].stopped_named == {"a/b", "a%b"}


# --------------------------------------------------------------------------- fault hook and statistics


async def test_fault_hook_can_answer_delay_or_fall_through(autojump_clock: trio.testing.MockClock) -> None:
    hub = FakeHub()
    add_running(hub, "alice")
    seen: list[str] = []

    async def fault(request: httpx.Request) -> httpx.Response | None:
        seen.append(request.url.path)
        if len(seen) <= 2:
            return httpx.Response(503, json={"status": 503, "message": "busy"})
        await trio.sleep(7)
        return None

    hub.fault = fault
    async with client_for(hub) as client:
        statuses = [(await client.get("/users")).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert trio.current_time() == pytest.approx(7)
    assert hub.statistics().status_codes == {503: 2, 200: 1}
    assert hub.statistics().requests_by_kind["list"] == 3  # faulted requests are counted too


async def test_fault_hook_exception_reaches_the_mock_client() -> None:
    hub = FakeHub()

    async def fault(request: httpx.Request) -> httpx.Response | None:
        raise httpx.ReadError("connection reset", request=request)

    hub.fault = fault
    async with client_for(hub) as client:
        with pytest.raises(httpx.ReadError):
            await client.get("/users")
    assert hub.statistics().in_flight == 0


async def test_statistics(autojump_clock: trio.testing.MockClock) -> None:
    hub = FakeHub(list_latency=1)
    add_running(hub, "alice", "bob")
    async with client_for(hub) as client:
        await client.get("/")
        # A token's revocation is a DELETE too, but not of a server or a user: it is no first_delete_at.
        minted = (await client.post("/users/bob/tokens", json={"scopes": ["access:servers!server=bob/"]})).json()
        assert (await client.delete(f"/users/bob/tokens/{minted['id']}")).status_code == 204
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(client.get, "/users")
        await trio.sleep(10)
        await client.delete("/users/alice/server")
        await client.delete("/users/alice")
        await client.get("/users", params={"state": "ready"})
    stats = hub.statistics()
    assert stats.requests_by_kind == {
        "version": 1,
        "whoami": 0,
        "list": 6,
        "stop": 1,
        "remove": 0,
        "delete_user": 1,
        "mint": 1,
        "revoke": 1,
        "kernels": 0,
        "terminals": 0,
        "notice": 0,
        "other": 0,
    }
    assert (stats.in_flight, stats.max_in_flight) == (0, 5)
    assert stats.first_delete_at == pytest.approx(11)
    assert stats.last_list_at == pytest.approx(11)
    assert stats.page_requests[-1].state == "ready"
    assert stats.page_requests[-1].at == pytest.approx(11)
    assert stats.status_codes == {200: 7, 201: 1, 204: 3}
    assert (stats.tokens_minted, stats.tokens_revoked, stats.tokens_live) == (1, 1, 0)
    assert stats.stop_requests == {("alice", ""): 1}
    assert stats.users_deleted == ("alice",)


# --------------------------------------------------------------------------- populate


def test_populate_is_deterministic_and_exact() -> None:
    now = T0
    a, b = FakeHub(), FakeHub()
    kwargs: dict[str, Any] = {"idle_fraction": 0.3, "seed": 7, "now": now, "named_fraction": 0.5}
    pop = a.populate(40, admin_fraction=0.25, **kwargs)
    assert pop == b.populate(40, admin_fraction=0.25, **kwargs)
    assert list(a.users) == [f"user-{i:02d}" for i in range(40)]
    assert len(pop.idle) + len(pop.active) == 60  # 40 default + 20 named servers
    assert len(pop.idle) == 18
    assert not pop.idle & pop.active
    assert len(pop.admins) == 10
    assert {u.name for u in a.users.values() if u.admin} == pop.admins
    for user_name, server_name in pop.idle:
        last = a.users[user_name].servers[server_name].last_activity
        assert last is not None
        assert now - last >= timedelta(hours=2)
    for user_name, server_name in pop.active:
        last = a.users[user_name].servers[server_name].last_activity
        assert last is not None
        assert now - last <= timedelta(minutes=1)
    assert pop.idle_users == {n for n in pop.users if all(slot in pop.idle for slot in slots_of(a, n))}
    assert pop != FakeHub().populate(40, idle_fraction=0.3, seed=8, now=now, named_fraction=0.5)


def slots_of(hub: FakeHub, user: str) -> set[tuple[str, str]]:
    return {(user, server) for server in hub.users[user].servers}


def test_populate_validates_fractions() -> None:
    with pytest.raises(ValueError, match="fractions"):
        FakeHub().populate(3, idle_fraction=1.5, seed=0, now=T0)


def test_add_user_rejects_duplicates() -> None:
    hub = FakeHub()
    hub.add_user("alice")
    with pytest.raises(ValueError, match="exists"):
        hub.add_user("alice")


# --------------------------------------------------------------------------- real loopback HTTP


async def test_loopback_http_round_trip_and_keep_alive() -> None:
    hub = FakeHub()
    add_running(hub, "alice", "bob")
    async with open_fake_hub(hub) as api_url, http_client(api_url) as client:
        assert api_url.startswith("http://127.0.0.1:")
        assert api_url.endswith("/hub/api")
        assert (await client.get("/")).json() == {"version": "5.2.1"}
        page = await list_page(client, limit=1)
        assert names(page) == ["alice"]
        assert page["_pagination"]["next"]["url"].startswith(api_url + "/users?")
        assert (await client.delete("/users/alice/server")).status_code == 204
        assert (await client.get("/users", headers={"Authorization": "token nope"})).status_code == 403
        missing = await client.get("/nothing/here")
        assert missing.json() == {"status": 404, "message": "Not Found"}
    stats = hub.statistics()
    assert stats.connections == 1  # five requests, one kept-alive connection
    assert sum(stats.requests_by_kind.values()) == 5


async def test_loopback_http_serves_20_concurrent_requests() -> None:
    hub = FakeHub(list_latency=0.3)
    add_running(hub, *(f"u{i}" for i in range(3)))
    results: list[int] = []
    async with open_fake_hub(hub) as api_url, http_client(api_url) as client:

        async def fetch() -> None:
            results.append((await client.get("/users")).status_code)

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(fetch)
    assert results == [200] * 20
    stats = hub.statistics()
    assert stats.max_in_flight == 20
    assert stats.connections == 20


async def test_loopback_hostile_names() -> None:
    hub = hostile_hub()
    async with open_fake_hub(hub) as api_url, http_client(api_url) as client:
        for name in HOSTILE:
            await check_hostile_stop(client, hub, name)
            hub.users[name].servers[""] = running()  # restore for the next round


async def test_loopback_slow_stop_202() -> None:
    hub = FakeHub(stop_latency=0.4, slow_stop_timeout=0.05)
    add_running(hub, "alice")
    async with open_fake_hub(hub) as api_url, http_client(api_url) as client:
        assert (await client.delete("/users/alice/server")).status_code == 202
        assert hub.users["alice"].servers[""].pending == "stop"
        with trio.fail_after(5):
            await hub.wait_stops_done()
        assert hub.users["alice"].servers == {}
        assert (await client.delete("/users/alice")).status_code == 204


async def test_loopback_fault_drops_the_connection() -> None:
    hub = FakeHub()
    drop = True

    async def fault(request: httpx.Request) -> httpx.Response | None:
        if drop:
            raise ConnectionResetError("simulated")
        return None

    hub.fault = fault
    async with open_fake_hub(hub) as api_url, http_client(api_url) as client:
        with pytest.raises(httpx.TransportError):
            await client.get("/users")
        drop = False
        assert (await client.get("/users")).status_code == 200  # the server survived


async def test_loopback_survives_garbage() -> None:
    hub = FakeHub()
    async with open_fake_hub(hub) as api_url:
        port = httpx.URL(api_url).port
        assert port is not None
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
            with trio.fail_after(5):
                while await stream.receive_some():
                    pass  # the server hangs up
        async with http_client(api_url) as client:
            assert (await client.get("/")).status_code == 200


async def test_loopback_tls() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    hub = FakeHub()
    add_running(hub, "alice")
    async with open_fake_hub(hub, ssl_context=server_context) as api_url:
        assert api_url.startswith("https://127.0.0.1:")
        async with http_client(api_url, verify=client_context) as client:
            assert names((await client.get("/users")).json()) == ["alice"]
            assert (await client.delete("/users/alice/server")).status_code == 204
        async with http_client(api_url, verify=ssl.create_default_context()) as untrusting:
            with pytest.raises(httpx.ConnectError):
                await untrusting.get("/")
        async with http_client(api_url, verify=client_context) as client:
            assert (await client.get("/")).status_code == 200  # still serving after a failed handshake


async def test_serve_reports_url_via_task_status() -> None:
    hub = FakeHub()
    async with trio.open_nursery() as nursery:
        api_url = await nursery.start(hub.serve)
        assert hub.background_nursery is not None
        async with http_client(api_url) as client:
            assert (await client.get("/")).status_code == 200
        nursery.cancel_scope.cancel()
    assert hub.background_nursery is None


async def test_context_managers_let_body_errors_through_unwrapped() -> None:
    hub = FakeHub()
    with pytest.raises(KeyError):
        async with hub.running():
            raise KeyError("from the body")
    with pytest.raises(KeyError):
        async with open_fake_hub(hub):
            raise KeyError("from the body")
    assert hub.background_nursery is None


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "example.org", ""])
async def test_serve_refuses_non_loopback(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        await FakeHub().serve(host=host)


async def test_serve_on_ipv6_loopback() -> None:
    probe = trio.socket.socket(trio.socket.AF_INET6)
    try:
        await probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    finally:
        probe.close()
    async with open_fake_hub(FakeHub(), host="::1") as api_url, http_client(api_url) as client:
        assert api_url.startswith("http://[::1]:")
        assert (await client.get("/")).status_code == 200


async def mint(client: httpx.AsyncClient, user: str, *scopes: str, **body: Any) -> httpx.Response:
    return await client.post(f"/users/{quote(user, safe='')}/tokens", json={"scopes": list(scopes), **body})


async def test_single_user_servers_behind_the_fake_proxy() -> None:
    hub = FakeHub(public_url="http://public.test")
    kernel = FakeKernel("k1", "busy", T0)
    hub.add_user(
        "a b",
        servers={
            "": running(kernels=[kernel], terminals=[FakeTerminal("1", T0)]),
            "lab": running("lab", kernels=None),
        },
    )
    async with client_for(hub) as client:
        own = (await mint(client, "a b", "access:servers!user=a b")).json()["token"]
        as_owner = {"Authorization": f"token {own}"}
        kernels = await client.get("http://public.test/user/a%20b/api/kernels", headers=as_owner)
        assert kernels.status_code == 200
        assert kernels.json() == [
            {
                "id": "k1",
                "name": "python3",
                "last_activity": "2025-01-23T16:01:47.564284+00:00",
                "execution_state": "busy",
                "connections": 0,
            }
        ]
        terminals = await client.get("http://public.test/user/a%20b/api/terminals", headers=as_owner)
        assert terminals.json() == [{"name": "1", "last_activity": "2025-01-23T16:01:47.564284+00:00"}]
        assert (await client.get("http://public.test/user/a%20b/lab/api/kernels", headers=as_owner)).status_code == 404
        assert (await client.get("http://public.test/user/nobody/api/kernels", headers=as_owner)).status_code == 404
        model = (await client.get("/users/a%20b")).json()
        assert model["servers"][""]["full_url"] == "http://public.test/user/a%20b/"
        hub.server_access = False
        assert (await client.get("http://public.test/user/a%20b/api/kernels", headers=as_owner)).status_code == 403
        hub.server_access = True
        # The culler's own token holds no access:servers: jupyter_server would refuse it, and so does the fake.
        assert (await client.get("http://public.test/user/a%20b/api/kernels")).status_code == 403
    async with client_for(hub, token="wrong") as client:
        assert (await client.get("http://public.test/user/a%20b/api/kernels")).status_code == 403
    stats = hub.statistics()
    assert stats.requests_by_kind["kernels"] == 6
    assert stats.requests_by_kind["terminals"] == 1
    assert stats.server_credentials == {"own": 4, "hub": 1, "other": 2}  # "other": nobody's, and "wrong"


# --------------------------------------------------------------------------- tokens minted for users


async def test_a_minted_token_reaches_its_server_and_nothing_else() -> None:
    hub = FakeHub(clock=lambda: T0)
    hub.add_user("alice", servers={"": running(kernels=[]), "lab": running("lab", kernels=[])})
    hub.add_user("bob", servers={"": running(kernels=[])})
    async with client_for(hub) as client:
        answer = await mint(client, "alice", "access:servers!server=alice/", expires_in=600, note="culler")
        assert answer.status_code == 201, answer.text
        model = answer.json()
        # The hub adds the owner's name and groups to what was asked for, and says so.
        assert model["scopes"] == [
            "access:servers!server=alice/",
            "read:users:groups!user=alice",
            "read:users:name!user=alice",
        ]
        assert (model["user"], model["note"], model["kind"]) == ("alice", "culler", "api_token")
        assert (model["created"], model["expires_at"]) == ("2025-01-23T16:01:47.564284Z", "2025-01-23T16:11:47.564284Z")
        as_alice = {"Authorization": f"token {model['token']}"}
        assert (await client.get("http://hub.test/user/alice/api/kernels", headers=as_alice)).status_code == 200
        # Only the server it names: not alice's other server, not bob's, and none of the hub's API.
        assert (await client.get("http://hub.test/user/alice/lab/api/kernels", headers=as_alice)).status_code == 403
        assert (await client.get("http://hub.test/user/bob/api/kernels", headers=as_alice)).status_code == 403
        assert (await client.get("/users", headers=as_alice)).status_code == 403
        assert (await client.delete("/users/bob/server", headers=as_alice)).status_code == 403
        whoami = await client.get("/user", headers=as_alice)
        assert (whoami.status_code, whoami.json()["name"], whoami.json()["scopes"]) == (200, "alice", model["scopes"])
        assert [token.id for token in hub.live_tokens()] == [model["id"]]
        assert (await client.delete(f"/users/alice/tokens/{model['id']}")).status_code == 204
        assert (await client.delete(f"/users/alice/tokens/{model['id']}")).status_code == 404
        assert (await client.get("/user", headers=as_alice)).status_code == 403
        assert (await client.get("http://hub.test/user/alice/api/kernels", headers=as_alice)).status_code == 403
    # Another user's server, and a revoked token: "other".
    assert hub.statistics().server_credentials == {"own": 2, "other": 2}


async def test_a_mint_is_checked_as_jupyterhub_checks_it() -> None:
    hub = FakeHub(token_expires_in_max_seconds=600)
    hub.add_user("alice", servers={"": running()})
    # A user whose role does not reach their own server.
    hub.add_user("locked", servers={"": running()}, scopes=["read:users!user=locked"])
    async with client_for(hub) as client:
        refused = await mint(client, "alice", "access:servers!server=bob/")
        assert refused.status_code == 400
        assert refused.json()["message"] == (
            "Not assigning requested scopes access:servers!server=bob/ not held by User alice"
        )
        assert (await mint(client, "alice", "admin:users")).status_code == 400
        assert (await mint(client, "locked", "access:servers!server=locked/")).status_code == 400
        too_long = await mint(client, "alice", "access:servers!server=alice/", expires_in=601)
        assert (too_long.status_code, too_long.json()["message"]) == (
            400,
            "token expires_in: 601 must not exceed 600",
        )
        for body in ({"expires_in": "600"}, {"expires_in": True}, {"scopes": "access:servers"}):
            assert (await client.post("/users/alice/tokens", json=body)).status_code == 400, body
        assert (await client.post("/users/alice/tokens", content=b"{not json")).status_code == 400
        at_most = await mint(client, "alice", "access:servers!server=alice/", expires_in=None)
        created, expires = (datetime.fromisoformat(at_most.json()[key]) for key in ("created", "expires_at"))
        assert expires - created == timedelta(seconds=600), "null means the hub's maximum"
        assert (await mint(client, "nobody", "access:servers!server=nobody/")).status_code == 404
    hub.scopes = frozenset({"list:users", "tokens!user=bob"})
    async with client_for(hub) as client:
        forbidden = await mint(client, "alice", "access:servers!server=alice/")
        assert forbidden.status_code == 403
        assert "tokens" in forbidden.json()["message"]
        assert (await client.delete("/users/alice/tokens/a1")).status_code == 403


async def test_tokens_expire_and_go_with_their_user(autojump_clock: trio.testing.MockClock) -> None:
    hub = FakeHub()
    hub.add_user("alice", servers={"": running(kernels=[])})
    hub.add_user("carol")
    async with client_for(hub) as client:
        short = (await mint(client, "alice", "access:servers!server=alice/", expires_in=60)).json()
        forever = (await mint(client, "carol", "read:users!user=carol")).json()
        assert forever["expires_at"] is None
        as_alice = {"Authorization": f"token {short['token']}"}
        await trio.sleep(59)
        assert (await client.get("http://hub.test/user/alice/api/kernels", headers=as_alice)).status_code == 200
        await trio.sleep(1)
        assert (await client.get("http://hub.test/user/alice/api/kernels", headers=as_alice)).status_code == 403
        assert (await client.delete(f"/users/alice/tokens/{short['id']}")).status_code == 404
        assert (await client.delete("/users/carol")).status_code == 204
        assert (await client.get("/user", headers={"Authorization": f"token {forever['token']}"})).status_code == 403
    assert hub.statistics().tokens_live == 0


async def test_the_cullers_own_token_opens_servers_only_with_access_servers() -> None:
    hub = FakeHub(scopes=("list:users", "access:servers"))
    hub.add_user("alice", servers={"": running(kernels=[])})
    async with client_for(hub) as client:
        assert (await client.get("http://hub.test/user/alice/api/kernels")).status_code == 200
    assert hub.statistics().server_credentials == {"hub": 1}


# --------------------------------------------------------------------------- the notice API (trio-culler-notice)


def notice_body(notice_id: str, *, keepable: bool = True) -> dict[str, Any]:
    return {
        "id": notice_id,
        "warned_at": "2025-01-23T16:00:00Z",
        "cull_at": "2025-01-23T16:15:00Z",
        "idle_since": None,
        "reason": "idle",
        "limit": "timeout",
        "limit_seconds": 3600,
        "rule": None,
        "activity": "running code",
        "keepable": keepable,
    }


async def test_the_fake_servers_answer_the_notice_api_as_the_extension_does() -> None:
    hub = FakeHub(clock=lambda: T0)
    hub.add_user("alice", servers={"": running(kernels=[]), "lab": running("lab", kernels=[], notices=False)})
    hub.add_user("bob", servers={"": running(kernels=[])})
    base = "http://hub.test/user/alice/api/trio-culler/v1/"
    async with client_for(hub) as client:
        own = (await mint(client, "alice", "access:servers!server=alice/")).json()["token"]
        bobs = (await mint(client, "bob", "access:servers!server=bob/")).json()["token"]
        as_alice, as_bob = {"Authorization": f"token {own}"}, {"Authorization": f"token {bobs}"}
        state = await client.get(base + "notice", headers=as_alice)
        started = isoformat(hub.users["alice"].servers[""].started)
        expected = {"notice": None, "keep": None, "now": isoformat(T0), "last_activity": started}
        assert (state.status_code, state.json()) == (200, expected)
        put = await client.put(base + "notice", json=notice_body("n-1"), headers=as_alice)
        assert (put.status_code, put.json()["notice"]) == (200, notice_body("n-1"))
        assert hub.users["alice"].servers[""].notice == notice_body("n-1")
        # Refused as the extension refuses: another user's token, a body that is not a notice, a bad id.
        assert (await client.get(base + "notice", headers=as_bob)).status_code == 403
        assert (await client.put(base + "notice", json={"id": "n-2"}, headers=as_alice)).status_code == 400
        assert (await client.put(base + "notice", content=b"x" * 20_000, headers=as_alice)).status_code == 413
        assert (await client.delete(base + "notice", params={"id": "../x"}, headers=as_alice)).status_code == 400
        # DELETE of another id leaves the notice; of its id, removes it.
        assert (await client.delete(base + "notice", params={"id": "n-0"}, headers=as_alice)).status_code == 204
        assert hub.users["alice"].servers[""].notice is not None
        assert (await client.delete(base + "notice", params={"id": "n-1"}, headers=as_alice)).status_code == 204
        assert hub.users["alice"].servers[""].notice is None
        # A keep clears a notice that can be kept, and stays; one that cannot stays too.
        await client.put(base + "notice", json=notice_body("n-3"), headers=as_alice)
        hub.keep("alice", notice_id="n-3")
        kept = (await client.get(base + "notice", headers=as_alice)).json()
        assert kept["notice"] is None
        assert kept["keep"] == {"notice_id": "n-3", "requested_at": isoformat(T0)}
        await client.put(base + "notice", json=notice_body("n-4", keepable=False), headers=as_alice)
        hub.keep("alice")
        assert hub.users["alice"].servers[""].notice == notice_body("n-4", keepable=False)
        # A server without the extension: 404, as jupyter_server answers a path it does not serve.
        lab = "http://hub.test/user/alice/lab/api/trio-culler/v1/notice"
        minted = (await mint(client, "alice", "access:servers!server=alice/lab")).json()["token"]
        assert (await client.get(lab, headers={"Authorization": f"token {minted}"})).status_code == 404
        with pytest.raises(ValueError, match="does not run the notice API"):
            hub.keep("alice", "lab")
    assert hub.statistics().notice_requests == {"GET": 4, "PUT": 5, "DELETE": 3}
    assert hub.statistics().requests_by_kind["notice"] == 12


async def test_the_fake_proxy_can_record_activity_as_configurable_http_proxy_does() -> None:
    clock = [T0]
    hub = FakeHub(clock=lambda: clock[0])
    hub.add_user("alice", servers={"": running(kernels=[])})
    async with client_for(hub) as client:
        own = (await mint(client, "alice", "access:servers!server=alice/")).json()["token"]
        as_alice = {"Authorization": f"token {own}"}
        clock[0] = T0 + timedelta(minutes=5)
        await client.get("http://hub.test/user/alice/api/kernels", headers=as_alice)
        assert hub.users["alice"].servers[""].last_activity != clock[0], "off unless asked for"
        hub.proxy_records_activity = True
        await client.get("http://hub.test/user/alice/api/nothing", headers=as_alice)  # 404: not recorded
        assert hub.users["alice"].servers[""].last_activity != clock[0]
        await client.get("http://hub.test/user/alice/api/trio-culler/v1/notice", headers=as_alice)
        assert hub.users["alice"].servers[""].last_activity == clock[0]
