"""The hub's plain requests built without httpx's parser (``_fast_request``) are the requests httpx builds."""

from __future__ import annotations

import re

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_culler import Config, _fast_request
from trio_culler._clients import TokenScope
from trio_culler._fast_request import FastTargets, fast_targets
from trio_culler._http import open_request_engine
from trio_culler._hub import quote_segment

BASES = (
    "http://127.0.0.1:8081/hub/api",
    "https://hub.example.org/hub/api/",
    "http://[::1]:8081/api",
    "http://hub/hub/api",
    "https://hub.example.org:443/prefix/hub/api",
)
HEADERS = httpx.Headers({"User-Agent": "trio-culler/test", "Accept-Encoding": "identity", "Authorization": "token t"})


def paths() -> st.SearchStrategy[str]:
    names = st.text(min_size=1, max_size=20)
    default = names.map(lambda user: f"/users/{quote_segment(user)}/server")
    named = st.tuples(names, names).map(
        lambda pair: f"/users/{quote_segment(pair[0])}/servers/{quote_segment(pair[1])}"
    )
    user = names.map(lambda user: f"/users/{quote_segment(user)}")
    raw = st.text(alphabet="abc/.%2Ee?=&~-_", max_size=20).map(lambda text: "/" + text)
    return st.one_of(default, named, user, raw)


def fast(base: str) -> FastTargets:
    built = fast_targets(base, HEADERS)
    assert built is not None, "this httpx builds URLs another way: the fast path would be off"
    return built


@pytest.mark.parametrize("base", BASES)
@given(path=paths())
def test_a_fast_url_is_the_url_httpx_parses(base: str, path: str) -> None:
    url = fast(base).url(path)
    expected = httpx.URL(base.rstrip("/") + path)
    if url is None:
        return  # httpx parses it, as before
    assert (str(url), url.raw_path, url.netloc, url.scheme, url.host, url.port) == (
        str(expected),
        expected.raw_path,
        expected.netloc,
        expected.scheme,
        expected.host,
        expected.port,
    )
    scope = TokenScope(base, "t")
    assert scope.contains(url) == scope.contains(expected)


def test_the_paths_a_pass_sends_take_the_fast_way() -> None:
    targets = fast(BASES[0])
    for path in ("/users/alice/server", "/users/caf%C3%A9/servers/gpu-1", "/users/%2E%2E/server"):
        assert targets.url(path) is not None, path
    # What httpx would rewrite (a dot-segment, a bad escape, a space, a query) is left to httpx.
    for path in ("/users/../server", "/users/./server", "/users/a%zz/server", "/users/a b", "/users?offset=0", "x"):
        assert targets.url(path) is None, path


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("method", ["GET", "DELETE", "HEAD"])
def test_a_fast_request_is_the_request_httpx_builds(base: str, method: str) -> None:
    targets = fast(base)
    url = targets.url("/users/b%C3%B6b/server")
    assert url is not None
    request = targets.request(method, url, {"timeout": {}})
    expected = httpx.Request(method, url, headers=HEADERS, extensions={"timeout": {}})
    assert request is not None
    # Already read, as httpx reads what it encodes: no async generator per request for trio to finalize.
    assert (request.method, request.url, request.headers.raw, request.content, request.extensions) == (
        expected.method,
        expected.url,
        expected.headers.raw,
        expected.read(),
        expected.extensions,
    )


def test_requests_with_a_body_or_to_another_host_are_left_to_httpx() -> None:
    targets = fast(BASES[0])
    url = targets.url("/users/alice/server")
    assert url is not None
    for method in ("POST", "PUT", "PATCH"):
        assert targets.request(method, url, {}) is None, method
    assert targets.request("GET", httpx.URL("http://127.0.0.1:9999/hub/api/users"), {}) is None


def test_an_httpx_that_builds_urls_otherwise_turns_the_fast_way_off(monkeypatch: pytest.MonkeyPatch) -> None:
    # The start-up check compares a URL built here with httpx's own: any difference, and httpx parses every URL.
    monkeypatch.setattr(FastTargets, "url", lambda self, path: httpx.URL("http://elsewhere/x"))
    assert fast_targets(BASES[0], HEADERS) is None
    monkeypatch.undo()
    monkeypatch.setattr(_fast_request, "_PLAIN_PATH", re.compile("(?!)"))
    assert fast_targets(BASES[0], HEADERS) is None


async def test_the_engine_sends_the_same_requests_either_way(monkeypatch: pytest.MonkeyPatch) -> None:
    def record(into: list[httpx.Request]) -> httpx.MockTransport:
        def handler(request: httpx.Request) -> httpx.Response:
            into.append(request)
            return httpx.Response(204)

        return httpx.MockTransport(handler)

    config = Config(url="http://127.0.0.1:8081/hub/api", api_token="a-token-of-the-culler-0123456789")
    targets = ["/users/alice/server", "/users/%2E%2E/server", "/users/bob/servers/x%20y", "/users?offset=0&limit=2"]

    async def send_all(into: list[httpx.Request]) -> None:
        async with open_request_engine(config, transport=record(into)) as engine:
            for target in targets:
                await engine.request("stop", "DELETE", target, ok=(204,))
                await engine.request("list", "GET", target, ok=(204,))

    fast_way: list[httpx.Request] = []
    await send_all(fast_way)
    monkeypatch.setattr("trio_culler._http.fast_targets", lambda url, headers: None)
    httpx_way: list[httpx.Request] = []
    await send_all(httpx_way)

    def seen(requests: list[httpx.Request]) -> list[tuple[object, ...]]:
        return [(r.method, str(r.url), r.headers.raw, r.content) for r in requests]

    assert len(fast_way) == 2 * len(targets)
    assert seen(fast_way) == seen(httpx_way)
    assert all(("authorization", "token a-token-of-the-culler-0123456789") in r.headers.items() for r in fast_way)
