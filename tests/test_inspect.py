"""_inspect: where a server is reached, what its answers mean, and the same over real loopback HTTP."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_culler import Config, Server, _inspect, run_pass
from trio_culler._inspect import (
    MAX_ANSWER_BYTES,
    MAX_ITEMS,
    InspectionFailed,
    Kernel,
    ServerActivity,
    Terminal,
    encode_path,
    inspect_server,
    parse_kernels,
    parse_terminals,
    server_base_url,
)
from trio_culler.testing import FakeHub, FakeKernel, FakeServer, open_fake_hub

T = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def srv(url: str | None = "/user/alice/", full_url: str | None = None) -> Server:
    return Server(url=url, ready=True, model={"url": url, "full_url": full_url})


def test_full_url_wins_over_the_public_url() -> None:
    server = srv(full_url="https://alice.hub.example/user/alice/")
    assert server_base_url(server, "http://fallback.example") == "https://alice.hub.example/user/alice/"


def test_the_public_urls_origin_and_the_servers_path() -> None:
    # The server's url already holds the hub's base_url: the public URL's own path is not repeated.
    server = srv("/jupyter/user/alice/lab/")
    assert server_base_url(server, "https://hub.example/jupyter/") == "https://hub.example/jupyter/user/alice/lab/"
    assert server_base_url(srv("/user/bob"), "http://127.0.0.1:8000") == "http://127.0.0.1:8000/user/bob/"


def test_no_way_to_reach_a_server() -> None:
    assert server_base_url(srv(), None) is None
    assert server_base_url(srv(url=None), "http://hub") is None
    assert server_base_url(srv(url="user/alice"), "http://hub") is None


@pytest.mark.parametrize(
    ("path", "encoded"),
    [
        ("/user/decoy%3Fx%3D1/", "/user/decoy%3Fx%3D1/"),  # the hub's escapes are kept
        ("/user/decoy?x=1/", "/user/decoy%3Fx=1/"),  # a raw query cannot slip in ("=" is allowed in a path)
        ("/user/../", "/user/%2E%2E/"),
        ("/user/./lab/", "/user/%2E/lab/"),
        ("/user/a b#c/", "/user/a%20b%23c/"),
        ("/user/ü/", "/user/%C3%BC/"),
    ],
)
def test_encode_path(path: str, encoded: str) -> None:
    assert encode_path(path) == encoded


@given(st.lists(st.text(max_size=6), min_size=1, max_size=4))
def test_an_encoded_path_has_no_query_fragment_or_dot_segment(segments: list[str]) -> None:
    path = encode_path("/user/" + "/".join(segments) + "/")
    assert path.isascii()
    assert "?" not in path
    assert "#" not in path
    assert " " not in path
    assert all(part not in (".", "..") for part in path.split("/"))


def test_parse_jupyter_servers_answers() -> None:
    kernels = parse_kernels(
        json.dumps(
            [
                {
                    "id": "k1",
                    "name": "python3",
                    "last_activity": "2026-11-25T11:00:00.123456Z",
                    "execution_state": "busy",
                    "connections": 1,
                },
                {"id": "k2", "name": "ir", "last_activity": "2026-11-25T10:00:00+00:00", "execution_state": "idle"},
            ]
        ).encode()
    )
    assert kernels == [
        Kernel("k1", "busy", datetime(2026, 11, 25, 11, 0, 0, 123456, tzinfo=UTC)),
        Kernel("k2", "idle", datetime(2026, 11, 25, 10, tzinfo=UTC)),
    ]
    terminals = parse_terminals(b'[{"name": "1", "last_activity": "2026-11-25T11:30:00Z"}]')
    assert terminals == [Terminal("1", datetime(2026, 11, 25, 11, 30, tzinfo=UTC))]
    activity = ServerActivity(tuple(kernels), tuple(terminals))
    assert activity.busy
    assert activity.busy_since == datetime(2026, 11, 25, 11, 0, 0, 123456, tzinfo=UTC)
    assert activity.last_activity == datetime(2026, 11, 25, 11, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html></html>",
        b"{}",
        b'"kernels"',
        b"[1]",
        b'[{"id": "k"}]',  # no execution_state: a kernel whose state is unknown is not read as idle
        b'[{"id": 5, "execution_state": "idle"}]',
        b'[{"id": "k", "execution_state": true}]',
        b'[{"id": "k", "execution_state": "idle", "last_activity": 1700000000}]',
        b'[{"id": "k", "execution_state": "idle", "last_activity": "last tuesday"}]',
        b"[" * 100_000,
    ],
)
def test_an_unreadable_answer_is_refused_never_guessed(body: bytes) -> None:
    with pytest.raises(InspectionFailed) as failed:
        parse_kernels(body)
    assert failed.value.kind == "unreadable"


def test_an_answer_is_read_within_bounds_and_the_first_error_ends_the_reading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kernel = b'{"id": "k", "execution_state": "idle"}'
    fits = b"[" + b",".join([kernel] * MAX_ITEMS) + b"]"
    assert len(parse_kernels(fits)) == MAX_ITEMS
    with pytest.raises(InspectionFailed, match=f"more than {MAX_ITEMS} items"):
        parse_kernels(b"[" + b",".join([kernel] * (MAX_ITEMS + 1)) + b"]")
    with pytest.raises(InspectionFailed, match=f"longer than {MAX_ANSWER_BYTES} bytes"):
        parse_terminals(b"[" + b" " * MAX_ANSWER_BYTES + b"]")
    # Nothing is structured before every item is known to be an object, and the first bad item ends it all.
    structured: list[object] = []
    real = _inspect._CONVERTER

    class Counting:
        def structure(self, value: object, kind: type) -> object:
            structured.append(value)
            return real.structure(value, kind)

    monkeypatch.setattr(_inspect, "_CONVERTER", Counting())
    with pytest.raises(InspectionFailed, match=r"kernels\[2\]: expected an object, got list"):
        parse_kernels(b"[" + kernel + b"," + kernel + b", [], {}]")
    assert structured == []
    with pytest.raises(InspectionFailed, match=r"kernels\[1\]: no 'id'"):
        parse_kernels(b"[" + kernel + b", {}" + b", {}" * 900 + b"]")
    assert len(structured) == 2, "the reading stopped at the first unreadable kernel"


@pytest.mark.parametrize(
    ("status", "kind", "needle"),
    [
        (403, "forbidden", "access:servers"),
        (404, "not_found", "404"),
        (302, "forbidden", "access:servers"),
        (500, "status", "500"),
    ],
)
async def test_statuses(status: int, kind: str, needle: str) -> None:
    async def fetch(url: str) -> tuple[int, bytes]:
        return status, b""

    with pytest.raises(InspectionFailed) as failed:
        await inspect_server(srv(), public_url="http://hub", fetch=fetch)
    assert failed.value.kind == kind
    assert needle in str(failed.value)


async def test_a_server_without_terminals_has_none() -> None:
    asked: list[str] = []

    async def fetch(url: str) -> tuple[int, bytes]:
        asked.append(url)
        return (200, b"[]") if "kernels" in url else (404, b"")

    assert await inspect_server(srv(), public_url="http://hub", fetch=fetch) == ServerActivity((), ())
    assert await inspect_server(srv(), public_url="http://hub", fetch=fetch, terminals=False) == ServerActivity()
    assert asked == [
        "http://hub/user/alice/api/kernels?no_track_activity=1",
        "http://hub/user/alice/api/terminals?no_track_activity=1",
        "http://hub/user/alice/api/kernels?no_track_activity=1",
    ]


async def test_over_real_loopback_http() -> None:
    """The default transport (not the in-memory one): the hub's API and the proxy's public side on loopback."""
    now = datetime.now(UTC)
    hub = FakeHub(token="loopback-token")

    def server(kernels: list[FakeKernel]) -> dict[str, Any]:
        return {
            "": FakeServer(
                "", started=now - timedelta(hours=3), last_activity=now - timedelta(hours=2), kernels=kernels
            )
        }

    hub.add_user("busy", servers=server([FakeKernel("k", "busy", now - timedelta(hours=2))]))
    hub.add_user("idle", servers=server([FakeKernel("k", "idle", now - timedelta(hours=2))]))
    hub.add_user("a b?c", servers=server([FakeKernel("k", "busy", now - timedelta(hours=2))]))
    async with open_fake_hub(hub) as api_url:
        public = api_url.removesuffix("/hub/api")
        config = Config(api_token="loopback-token", url=api_url, timeout=3600, inspect_kernels=True, public_url=public)
        report = await run_pass(config)
    assert report.ok
    assert report.servers_inspected == 3
    assert set(hub.statistics().stop_requests) == {("idle", "")}
    assert hub.statistics().requests_by_kind["kernels"] == 3
