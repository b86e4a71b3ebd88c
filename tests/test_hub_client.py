"""HubClient and its request engine over httpx: what they send, how httpx's exceptions and the hub's statuses
become the culler's errors, requests outside the hub's API (same limiter, a shorter leash, never the culler's
token), the tokens minted for users, and the adversarial review's points that concern the client.

In memory with ``httpx.MockTransport`` where the shape of a request or the mapping of an exception is the point;
against real loopback servers where bytes on the wire are (a reflected token in a malformed header, a garbled
status line, TLS spoken to a plain-HTTP port, a hub that never stops answering 1xx or sending 1-byte chunks).
"""

from __future__ import annotations

import json
import logging
import ssl
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any

import attrs
import httpx
import pytest
import trio

from trio_culler import Config, run_pass
from trio_culler._errors import HubProtocolError, HubStatusError, HubTimeout, HubUnavailable
from trio_culler._http import INSPECT_TIMEOUT
from trio_culler._hub import HubClient, open_hub_client
from trio_culler.testing import FakeHub, open_fake_hub

from .support.faults import NOW, TOKEN

Handler = Callable[[httpx.Request], Awaitable[httpx.Response] | httpx.Response]


def config(url: str = "http://hub.test/hub/api", **changes: Any) -> Config:
    return attrs.evolve(Config(api_token=TOKEN, url=url, timeout=600, max_retries=2), **changes)


@asynccontextmanager
async def mocked(handler: Handler, **changes: Any) -> AsyncIterator[HubClient]:
    async def respond(request: httpx.Request) -> httpx.Response:
        answer = handler(request)
        return await answer if isinstance(answer, Awaitable) else answer

    async with open_hub_client(config(**changes), transport=httpx.MockTransport(respond)) as hub:
        yield hub


def assert_clean(text: str) -> None:
    assert TOKEN not in text
    assert TOKEN[:12] not in text
    assert TOKEN[-12:] not in text


def full_text(error: BaseException) -> str:
    """What a traceback of ``error`` shows, causes included."""
    return "".join(traceback.format_exception(error))


# ------------------------------------------------------------------------------------------ what is sent


async def test_requests_carry_the_token_and_encode_every_segment(autojump_clock: trio.abc.Clock) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204, headers={"Set-Cookie": "session=abc; Path=/"})

    async with mocked(handler) as hub:
        assert await hub.stop_server(".", "a/b?c") == 204
        assert await hub.stop_server("x", "", remove=True) == 204
    first, second = seen
    assert first.url.raw_path == b"/hub/api/users/%2E/servers/a%2Fb%3Fc"
    assert first.headers["authorization"] == f"token {TOKEN}"
    assert first.headers["accept-encoding"] == "identity"
    assert first.headers["user-agent"].startswith("trio-culler/")
    assert second.content == b'{"remove": true}'
    assert second.headers["content-type"] == "application/json"
    # A client that holds an admin token keeps no cookies: the hub's Set-Cookie is not sent back.
    assert "cookie" not in second.headers


async def test_another_origin_goes_through_the_same_limiter_retries_and_errors_without_the_token(
    autojump_clock: trio.abc.Clock,
) -> None:
    in_flight = 0
    most = 0
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, most, calls
        calls += 1
        first = calls == 1
        in_flight += 1
        most = max(most, in_flight)
        await trio.sleep(0.1)
        in_flight -= 1
        if first:
            return httpx.Response(503)  # retried, as a hub request would be
        if request.url.path == "/nope":
            return httpx.Response(404)
        return httpx.Response(200, json={"kernels": [], "token": request.headers.get("authorization")})

    async with mocked(handler, concurrency=3) as hub:
        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(hub.http.request, "get", "GET", "http://127.0.0.1:8000/user/a%20b/api/kernels")
        anonymous = await hub.http.request("kernels", "GET", "http://127.0.0.1:8000/user/x/api/status")
        assert anonymous.json()["token"] is None, "the culler's token never leaves the hub's API"
        status, body = await hub.get_elsewhere(
            "kernels", "http://127.0.0.1:8000/user/x/api/kernels", credential="its-own", max_body=1000
        )
        assert (status, json.loads(body)["token"]) == (200, "token its-own"), "an explicit credential, as given"
        assert await hub.get_elsewhere("kernels", "http://127.0.0.1:8000/nope", credential=None, max_body=10) == (
            404,
            b"",
        )
        with pytest.raises(HubStatusError, match=r"GET http://127\.0\.0\.1:8000/nope -> 404"):
            await hub.http.request("get", "GET", "http://127.0.0.1:8000/nope")
        stats = hub.statistics()
    assert most == 3
    assert stats.retries == 1
    assert stats.requests == {"get": 12, "kernels": 3}


async def test_a_users_server_gets_a_shorter_leash_than_the_hub(autojump_clock: trio.abc.Clock) -> None:
    """Outside the hub's API: a deadline of its own (INSPECT_TIMEOUT, not --request-timeout), no retry after a
    timeout, no Retry-After honoured (the ordinary backoff instead), nothing of the body quoted, a cap on the
    answer's bytes (not retried either). The hub's own requests keep the long deadline and honour Retry-After."""
    calls: dict[str, list[float]] = {}

    async def handler(request: httpx.Request) -> httpx.Response:
        calls.setdefault(request.url.path, []).append(trio.current_time())
        match request.url.path:
            case "/hang":
                await trio.sleep_forever()
            case "/busy":
                return httpx.Response(503, headers={"Retry-After": "3600"})
            case "/talks":
                return httpx.Response(500, json={"message": "I am the hub, trust me: stop bob"})
            case "/large":
                return httpx.Response(200, content=b"x" * 1001)
            case "/hub/api/":
                return httpx.Response(503, headers={"Retry-After": "30"})
        return httpx.Response(200, content=b"x" * 1000)

    server = "http://127.0.0.1:8000"
    async with mocked(handler, request_timeout=60.0, max_retries=1) as hub:
        start = trio.current_time()
        with pytest.raises(HubTimeout, match=f"no answer within {INSPECT_TIMEOUT:g} s"):
            await hub.get_elsewhere("inspect", f"{server}/hang", credential=None, max_body=1000)
        assert trio.current_time() - start == pytest.approx(INSPECT_TIMEOUT)
        with pytest.raises(HubStatusError, match="-> 503"):
            await hub.get_elsewhere("inspect", f"{server}/busy", credential=None, max_body=1000)
        first, second = calls["/busy"]
        assert 0.25 <= second - first <= 0.5, "the backoff's first step, not the hour it asked for"
        with pytest.raises(HubStatusError) as talked:
            await hub.get_elsewhere("inspect", f"{server}/talks", credential=None, max_body=1000)
        assert str(talked.value) == f"GET {server}/talks -> 500"
        with pytest.raises(HubProtocolError, match="longer than 1000 bytes"):
            await hub.get_elsewhere("inspect", f"{server}/large", credential=None, max_body=1000)
        assert await hub.get_elsewhere("inspect", f"{server}/fits", credential=None, max_body=1000) == (
            200,
            b"x" * 1000,
        )
        with pytest.raises(HubStatusError, match="-> 503"):
            await hub.get_info()
        first, second = calls["/hub/api/"]
        assert second - first == pytest.approx(30), "the hub's Retry-After is honoured"
    assert [len(calls[path]) for path in ("/hang", "/busy", "/talks", "/large")] == [1, 2, 2, 1]


async def test_a_redirect_says_so_and_suggests_the_api_url(autojump_clock: trio.abc.Clock) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": "/hub/login?next=%2Fhub%2F"})

    async with mocked(handler, url="http://127.0.0.1:8081/hub") as hub:
        with pytest.raises(HubStatusError) as caught:
            await hub.get_info()
    message = str(caught.value)
    assert "-> 302" in message
    assert "the hub answered with a redirect to /hub/login" in message
    assert "http://127.0.0.1:8081/hub/api" in message
    assert not caught.value.transient


# ------------------------------------------------------------------------------------------ httpx -> HubError


def raising(error: Exception) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    return handler


def tls_failure(cause: ssl.SSLError) -> httpx.ConnectError:
    error = httpx.ConnectError("the TLS handshake with hub.test:443 failed")
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("error", "kind", "transient", "words"),
    [
        (httpx.ConnectError("cannot connect: Connection refused"), HubUnavailable, True, "Connection refused"),
        (httpx.ReadError("connection lost"), HubUnavailable, True, "connection lost"),
        (httpx.RemoteProtocolError("illegal status line"), HubUnavailable, True, "illegal status line"),
        (httpx.ReadTimeout("slow"), HubTimeout, True, "slow"),
        (httpx.DecodingError("bad gzip"), HubProtocolError, False, "unreadable answer: bad gzip"),
        (httpx.UnsupportedProtocol("ftp"), HubUnavailable, False, "ftp"),
        (tls_failure(ssl.SSLCertVerificationError(1, "certificate verify failed")), HubUnavailable, False, "verify"),
        (tls_failure(ssl.SSLEOFError(8, "EOF occurred")), HubUnavailable, True, "EOF"),
    ],
)
async def test_httpx_errors_are_mapped_once(
    autojump_clock: trio.abc.Clock, error: Exception, kind: type[Exception], transient: bool, words: str
) -> None:
    async with mocked(raising(error)) as hub:
        with pytest.raises(kind, match=words) as caught:
            await hub.get_info()
        retries = hub.statistics().retries
    assert caught.value.transient is transient  # type: ignore[attr-defined]
    assert caught.value.__cause__ is error  # raise mapped from exc
    assert retries == (2 if transient else 0)


# ------------------------------------------------------------------------------------------ loopback servers


Script = Callable[[trio.SocketStream, bytes], Awaitable[None]]


@asynccontextmanager
async def raw_server(script: Script) -> AsyncIterator[str]:
    """A loopback server that reads a request head and runs ``script(stream, head)``; yields the API URL."""

    async def handle(stream: trio.SocketStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            data = await stream.receive_some(65536)
            if not data:
                return
            head += data
        await script(stream, head)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        yield f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/hub/api"
        nursery.cancel_scope.cancel()


def answering(reply: Callable[[bytes], bytes]) -> Script:
    async def script(stream: trio.SocketStream, head: bytes) -> None:
        await stream.send_all(reply(head))
        await trio.sleep_forever()

    return script


def forever(head: bytes, piece: bytes) -> Script:
    async def script(stream: trio.SocketStream, _request: bytes) -> None:
        await stream.send_all(head)
        while True:
            await stream.send_all(piece)

    return script


def authorization(head: bytes) -> bytes:
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"authorization:"):
            return line.split(b":", 1)[1].strip()
    raise AssertionError("no Authorization header")


@pytest.mark.parametrize(
    "reflect",
    [
        # The token in a header line without a colon: h11 refuses it and quotes the line in its message.
        pytest.param(lambda token: b"HTTP/1.1 200 OK\r\nX-Echo " + token + b"\r\n\r\n", id="malformed header"),
        # A garbled status line that echoes the token: an error of the transport, not of the hub's answer.
        pytest.param(lambda token: b"HTTP/1.1 2OO " + token + b"\r\n\r\n", id="garbled status line"),
        # Padding puts the token across the cut that shortens a quoted message.
        pytest.param(lambda token: b"HTTP/1.1 200 OK\r\nX-" + b"a" * 250 + b" " + token + b"\r\n\r\n", id="at the cut"),
    ],
)
async def test_a_token_reflected_into_a_refused_answer_is_redacted_before_the_message_is_cut(
    reflect: Callable[[bytes], bytes],
) -> None:
    async with (
        raw_server(answering(lambda head: reflect(authorization(head)))) as url,
        open_hub_client(config(url, max_retries=0)) as hub,
    ):
        with pytest.raises(HubUnavailable) as caught:
            await hub.get_info()
    text = full_text(caught.value)
    assert "[redacte" in str(caught.value)  # redacted, then cut (at the cut, through the marker itself)
    assert_clean(text)  # the HubError, the httpx error it was raised from, the whole traceback


async def test_https_against_a_plain_http_hub_that_waits_says_the_handshake_failed_and_suggests_http() -> None:
    async def wait_for_a_request_head(stream: trio.SocketStream, head: bytes) -> None:
        raise AssertionError("a TLS greeting has no end of a request head")  # pragma: no cover

    # What JupyterHub's tornado does with a TLS greeting: wait for the end of a request head, which never comes.
    async with raw_server(wait_for_a_request_head) as api_url:
        https_url = api_url.replace("http://", "https://")
        async with open_hub_client(config(https_url)) as hub:
            with pytest.raises(HubUnavailable) as caught:
                await hub.get_info()
            retries = hub.statistics().retries
    message = str(caught.value)
    assert "no TLS handshake" in message
    assert f"use an http:// --url, e.g. {api_url}/" in message
    assert not caught.value.transient
    # After the handshake's few seconds, not after the request's deadline (a minute) and five retries.
    assert retries == 0


async def test_https_against_a_plain_http_hub_that_hangs_up_suggests_http() -> None:
    async with open_fake_hub(FakeHub(token=TOKEN)) as api_url:
        https_url = api_url.replace("http://", "https://")
        async with open_hub_client(config(https_url, max_retries=0)) as hub:
            with pytest.raises(HubUnavailable) as caught:
                await hub.get_info()
    message = str(caught.value)
    assert "TLS handshake" in message
    assert f"use an http:// --url, e.g. {api_url}/" in message


async def test_an_endless_stream_of_100_continue_ends_the_request() -> None:
    async with (
        raw_server(forever(b"", b"HTTP/1.1 100 Continue\r\n\r\n" * 64)) as url,
        open_hub_client(config(url, max_retries=0, request_timeout=30.0)) as hub,
    ):
        with pytest.raises(HubUnavailable, match="informational"):
            await hub.get_info()


async def test_an_endless_body_of_1_byte_chunks_ends_at_the_request_deadline() -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    async with (
        raw_server(forever(head, b"1\r\nx\r\n" * 1024)) as url,
        open_hub_client(config(url, max_retries=0, request_timeout=0.5)) as hub,
    ):
        with pytest.raises(HubTimeout, match=r"no answer within 0\.5 s"):
            await hub.get_info()


@pytest.mark.parametrize("use_proxy_env", [False, True], ids=["h11 transport", "httpcore"])
@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n" + b"x" * 300_000, "longer than 1000 bytes"),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 20\r\n\r\n" + b"x" * 20, "compressed"),
    ],
    ids=["over the cap", "compressed"],
)
async def test_a_capped_answer_is_refused_whichever_transport_reads_it(
    use_proxy_env: bool, answer: bytes, problem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cap holds on httpx's own transport too (--use-proxy-env), which streams the body to the engine."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    async with (
        raw_server(answering(lambda _head: answer)) as url,
        open_hub_client(config(url, use_proxy_env=use_proxy_env)) as hub,
    ):
        server = url.removesuffix("/hub/api") + "/user/x/api/kernels"
        with pytest.raises(HubProtocolError, match=problem):
            await hub.get_elsewhere("inspect", server, credential=None, max_body=1000)
        retries = hub.statistics().retries
    assert retries == 0


# ------------------------------------------------------------------------------------------ unreadable users


def page_of(*items: Any) -> httpx.Response:
    return httpx.Response(200, json={"items": list(items), "_pagination": {"total": len(items), "limit": 200}})


def idle_user(name: str) -> dict[str, Any]:
    # A model as the culler's documented scopes show it: with the user's own last_activity (read:users:activity);
    # without it the pass would stop for a missing scope (see _scopes.FIELDS).
    return {
        "name": name,
        "last_activity": "2020-01-01T00:00:00Z",
        "servers": {"": {"name": "", "ready": True, "url": "/user/x/", "last_activity": "2020-01-01T00:00:00Z"}},
    }


async def test_a_lone_surrogate_or_an_empty_name_is_skipped_with_a_warning(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    deleted: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "DELETE":
            deleted.append(request.url.raw_path.decode())
            return httpx.Response(204)
        if request.url.path.endswith("/users"):
            # json.dumps writes a lone surrogate as the escape \ud800, which is how a hub would send it.
            body = json.dumps(
                {
                    "items": [idle_user("bad\ud800name"), idle_user(""), idle_user("good")],
                    "_pagination": {"total": 3, "limit": 200},
                }
            )
            return httpx.Response(200, content=body.encode(), headers={"Content-Type": "application/json"})
        return httpx.Response(200, json={"version": "5.2.1"})

    caplog.set_level(logging.WARNING, logger="trio_culler")
    report = await run_pass(config(), transport=httpx.MockTransport(handler), now=NOW)
    assert deleted == ["/hub/api/users/good/server"]
    assert report.skipped == 2
    assert not report.errors
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert any("Skipping user bad\\ud800name" in line and "lone surrogate" in line for line in warnings), warnings
    assert any("Skipping user '' (an empty name" in line for line in warnings), warnings


async def test_a_skipped_users_label_and_problem_are_redacted_for_an_embedders_handler(
    autojump_clock: trio.abc.Clock,
) -> None:
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())
            seen.extend(str(value) for value in record.__dict__.values() if isinstance(value, str))

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/users"):
            user = {**idle_user(f"u-{TOKEN}"), "admin": f"yes {TOKEN}"}
            odd = {"name": 5, "servers": {TOKEN: {"last_activity": f"not a time {TOKEN}"}}}
            return page_of(user, odd)
        return httpx.Response(200, json={"version": "5.2.1"})

    collect = Collect(logging.DEBUG)
    logger = logging.getLogger("trio_culler")
    logger.addHandler(collect)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        report = await run_pass(config(), transport=httpx.MockTransport(handler), now=NOW)
    finally:
        logger.removeHandler(collect)
        logger.setLevel(level)
    assert report.skipped == 2
    assert any("Skipping user u-[redacted]" in line for line in seen), seen
    for line in seen:
        assert_clean(line)


# ------------------------------------------------------------------------------------------ tokens for users


async def test_mint_token_asks_for_a_scoped_expiring_token_and_reads_the_answer(
    autojump_clock: trio.abc.Clock,
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "DELETE":
            return httpx.Response(204 if len(seen) == 2 else 404)
        return httpx.Response(
            201,
            json={
                "token": "minted-0123456789",
                "id": "a5",
                "expires_at": "2026-11-25T12:10:00Z",
                "created": "2026-11-25T12:00:00.123Z",
                "scopes": ["access:servers!server=a b/", "read:users:name!user=a b"],
                "note": "ignored",
            },
        )

    async with mocked(handler) as hub:
        minted = await hub.mint_token("a b", scopes=["access:servers!server=a b/"], expires_in=600, note="culler")
        assert await hub.revoke_token("a b", minted.id) == 204
        assert await hub.revoke_token("a b", "a/5") == 404  # already gone: not an error
    post, revoke, gone = seen
    assert (post.method, post.url.raw_path) == ("POST", b"/hub/api/users/a%20b/tokens")
    assert json.loads(post.content) == {"scopes": ["access:servers!server=a b/"], "expires_in": 600, "note": "culler"}
    assert post.headers["content-type"] == "application/json"
    assert post.headers["authorization"] == f"token {TOKEN}"
    assert (revoke.method, revoke.url.raw_path) == ("DELETE", b"/hub/api/users/a%20b/tokens/a5")
    assert gone.url.raw_path == b"/hub/api/users/a%20b/tokens/a%2F5"
    assert minted.token == "minted-0123456789"
    assert minted.expires_at == datetime(2026, 11, 25, 12, 10, tzinfo=UTC)
    assert minted.scopes == frozenset({"access:servers!server=a b/", "read:users:name!user=a b"})
    assert "minted-0123456789" not in repr(minted)


@pytest.mark.parametrize(
    "answer",
    [
        {"id": "a5", "expires_at": None},  # no token
        {"token": "bad\r\ntoken", "id": "a5"},  # a token no header can carry
        {"token": "t", "expires_at": None},  # no id
        {"token": "t", "id": "a5", "expires_at": "next week"},
        ["not", "an", "object"],
    ],
)
async def test_an_unreadable_mint_answer_is_never_used(autojump_clock: trio.abc.Clock, answer: Any) -> None:
    async with mocked(lambda _request: httpx.Response(201, json=answer)) as hub:
        with pytest.raises(HubProtocolError, match=r"POST http://hub\.test/hub/api/users/u/tokens"):
            await hub.mint_token("u", scopes=[], expires_in=600, note="culler")


async def test_a_mint_that_timed_out_is_not_sent_again_but_a_503_is(autojump_clock: trio.abc.Clock) -> None:
    """A POST the hub may have acted on is not repeated (a second token would be left behind); a 503 means it
    was not acted on, and is retried like any request."""
    posts = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal posts
        posts += 1
        if posts == 1:
            await trio.sleep_forever()
        if posts == 2:
            return httpx.Response(503)
        return httpx.Response(201, json={"token": "t", "id": "a1", "expires_at": None})

    async with mocked(handler, request_timeout=5.0) as hub:
        with pytest.raises(HubTimeout):
            await hub.mint_token("u", scopes=[], expires_in=600, note="culler")
        assert posts == 1
        assert (await hub.mint_token("u", scopes=[], expires_in=600, note="culler")).id == "a1"
    assert posts == 3


# ------------------------------------------------------------------ the limiter over the h11 transport


async def test_a_request_cancelled_before_it_starts_sends_nothing_and_returns_its_token() -> None:
    """With the h11 transport a free limiter token is taken without a checkpoint (the transport checks for
    cancellation before anything else): a request whose scope is already cancelled must still send no byte,
    give the token back, and leave the pooled connection to its successor."""
    heads: list[bytes] = []
    connections = 0

    async def script(stream: trio.SocketStream, head: bytes) -> None:
        nonlocal connections
        connections += 1
        heads.append(head)
        await stream.send_all(b"HTTP/1.1 204 No Content\r\n\r\n")
        while True:  # keep-alive: answer every further request on this connection
            data = await stream.receive_some(65536)
            if not data:
                return
            heads.append(data)
            await stream.send_all(b"HTTP/1.1 204 No Content\r\n\r\n")

    async with raw_server(script) as url, open_hub_client(config(url, concurrency=1)) as hub:
        assert await hub.stop_server("first", "") == 204  # a pooled, idle connection now
        with trio.CancelScope() as scope:
            scope.cancel()
            await hub.stop_server("never", "")
        assert scope.cancelled_caught
        assert hub.limiter.borrowed_tokens == 0
        assert await hub.stop_server("after", "") == 204
    assert [head.split(b" ")[1] for head in heads] == [b"/hub/api/users/first/server", b"/hub/api/users/after/server"]
    assert connections == 1


async def test_a_free_token_does_not_jump_the_queue() -> None:
    """acquire_nowait refuses while a request waits for the token: the waiting one goes first."""
    release = trio.Event()
    order: list[bytes] = []

    async def script(stream: trio.SocketStream, head: bytes) -> None:
        while True:
            order.append(head.split(b" ")[1])
            if len(order) == 1:
                await release.wait()
            await stream.send_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            head = await stream.receive_some(65536)
            if not head:
                return

    async with (
        raw_server(script) as url,
        open_hub_client(config(url, concurrency=1)) as hub,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(hub.stop_server, "holder", "")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(hub.stop_server, "waiter", "")
        await trio.testing.wait_all_tasks_blocked()
        assert hub.limiter.statistics().tasks_waiting == 1
        release.set()
        # The token passes to the waiter on release, before this late request can take it.
        nursery.start_soon(hub.stop_server, "late", "")
    assert order == [b"/hub/api/users/holder/server", b"/hub/api/users/waiter/server", b"/hub/api/users/late/server"]
