"""The two hub transports: what PoolTransport puts on the wire for a base URL, and how HttpxTransport turns
httpx's exceptions into the transport errors the hub client maps (retryable or not, timeout, unreadable)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import httpx
import pytest
import trio

from trio_culler._http11 import TransportError
from trio_culler._httpx_transport import HttpxTransport
from trio_culler._transport import AnswerUnreadable, PoolTransport, TransportTimeout

HEADERS = [("Authorization", "token secret-token-0123456789"), ("User-Agent", "trio-culler/test")]


@asynccontextmanager
async def recording_server(answer: bytes) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A loopback server that records each request head it reads and answers every one with ``answer``."""
    heads: list[bytes] = []

    async def handle(stream: trio.SocketStream) -> None:
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buffer += data
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            heads.append(head)
            await stream.send_all(answer)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1], heads
        nursery.cancel_scope.cancel()


async def test_the_request_line_and_host_follow_the_base_url() -> None:
    async with recording_server(b"HTTP/1.1 204 No Content\r\n\r\n") as (port, heads):
        transport = PoolTransport(f"http://127.0.0.1:{port}/hub/api/", HEADERS)
        try:
            response = await transport.request("DELETE", "/users/a%2Fb/server", (), b"")
            await transport.request("GET", "/users?state=ready&offset=0", [("Accept", "x/y")], b"")
        finally:
            await transport.aclose()
    assert response.status == 204
    first, second = (head.split(b"\r\n") for head in heads)
    assert first == [
        b"DELETE /hub/api/users/a%2Fb/server HTTP/1.1",
        f"Host: 127.0.0.1:{port}".encode(),
        b"Authorization: token secret-token-0123456789",
        b"User-Agent: trio-culler/test",
    ]
    assert second[0] == b"GET /hub/api/users?state=ready&offset=0 HTTP/1.1"
    assert second[-1] == b"Accept: x/y"


async def test_a_body_gets_its_length() -> None:
    async with recording_server(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n") as (port, heads):
        transport = PoolTransport(f"http://127.0.0.1:{port}", HEADERS)
        try:
            response = await transport.request("DELETE", "/x", [("Content-Type", "application/json")], b"{}")
        finally:
            await transport.aclose()
    assert response.status == 202
    assert heads[0].split(b"\r\n")[0] == b"DELETE /x HTTP/1.1"
    assert b"Content-Length: 2" in heads[0].split(b"\r\n")


@pytest.mark.parametrize(
    ("url", "host", "prefix"),
    [
        ("http://hub:8081/hub/api", b"Host: hub:8081", b"/hub/api"),
        ("http://hub:80/hub/api/", b"Host: hub", b"/hub/api"),
        ("https://hub.example.org/hub/api", b"Host: hub.example.org", b"/hub/api"),
        ("https://hub.example.org:443/", b"Host: hub.example.org", b""),
        ("http://[::1]:8081/hub/api", b"Host: [::1]:8081", b"/hub/api"),
        ("http://HUB.Example:8081/a%20b/api", b"Host: hub.example:8081", b"/a%20b/api"),
        ("http://bücher.example/hub/api", b"Host: xn--bcher-kva.example", b"/hub/api"),
        ("http://hub/hüb/api", b"Host: hub", b"/h%C3%BCb/api"),
    ],
)
def test_base_urls_become_a_host_header_and_a_path_prefix(url: str, host: bytes, prefix: bytes) -> None:
    transport = PoolTransport(url, [])
    assert transport._head == host + b"\r\n"
    assert transport._prefix == prefix


@pytest.mark.parametrize("value", ["token a\r\nX-Evil: 1", "token \u00e9", "token a\0b"])
def test_a_header_that_could_split_the_request_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="Authorization"):
        PoolTransport("http://hub/hub/api", [("Authorization", value)])


# -- HttpxTransport ----------------------------------------------------------------------------------------


def failing_with(error: Exception) -> HttpxTransport:
    async def send(request: httpx.Request) -> httpx.Response:
        raise error

    return HttpxTransport("http://hub.test/hub/api", HEADERS, send)


async def test_httpx_answers_arrive_with_lower_case_header_names() -> None:
    seen: list[httpx.Request] = []

    async def send(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(429, headers={"Retry-After": "3"}, json={"message": "busy"})

    response = await HttpxTransport("http://hub.test/hub/api/", HEADERS, send).request(
        "DELETE", "/users/%2E/server", [("Accept", "x/y")], b""
    )
    assert response.status == 429
    assert response.header("retry-after") == "3"
    assert (b"retry-after", b"3") in response.headers
    assert response.body == b'{"message":"busy"}'
    (request,) = seen
    assert request.url.raw_path == b"/hub/api/users/%2E/server"
    assert request.headers["authorization"] == "token secret-token-0123456789"
    assert request.headers["accept"] == "x/y"


async def test_httpx_connection_failures_are_retryable_transport_errors() -> None:
    error = httpx.ConnectError("[Errno 111] Connection refused")
    with pytest.raises(TransportError, match=r"ConnectError: .*Connection refused") as caught:
        await failing_with(error).request("GET", "/", (), b"")
    assert caught.value.retryable
    assert not isinstance(caught.value, TransportTimeout | AnswerUnreadable)


async def test_a_rejected_certificate_is_not_retryable() -> None:
    error = httpx.ConnectError("")
    error.__cause__ = ssl.SSLCertVerificationError(1, "certificate verify failed: unable to get local issuer")
    with pytest.raises(TransportError, match="certificate verify failed") as caught:
        await failing_with(error).request("GET", "/", (), b"")
    assert not caught.value.retryable


async def test_httpx_timeouts_are_timeouts() -> None:
    with pytest.raises(TransportTimeout):
        await failing_with(httpx.ReadTimeout("slow")).request("GET", "/", (), b"")


async def test_an_undecodable_answer_is_unreadable_and_not_retried() -> None:
    with pytest.raises(AnswerUnreadable) as caught:
        await failing_with(httpx.DecodingError("bad gzip")).request("GET", "/", (), b"")
    assert not caught.value.retryable
