"""The transport's limits are the ones it was given: the head limit, for a head that arrives in pieces, and the
body limit, which a body of exactly that size meets.

A head that arrives in one read is parsed whole whatever its size (h11 bounds what it buffers of an incomplete
one), so each answer here is written in pieces, with a pause after each, over a real loopback connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress

import httpx
import pytest
import trio

from trio_culler._transport import MAX_BODY, MAX_HEAD, TrioH11Transport

#: Pause after each piece: long enough for the client to read each one by itself on a loopback connection.
PAUSE = 0.005


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[offset : offset + size] for offset in range(0, len(data), size)]


def header_lines(length: int) -> bytes:
    """Header lines of at least ``length`` bytes in all (100 bytes each), without the blank line that ends a head."""
    line = b"X-Pad: " + b"a" * 91 + b"\r\n"
    return line * -(-length // len(line))


@asynccontextmanager
async def answering_in_pieces(answer: Sequence[bytes]) -> AsyncIterator[str]:
    """A loopback server that answers every request with ``answer``, one piece at a time, then waits for the
    client to hang up. Yields its URL."""

    async def handle(stream: trio.SocketStream) -> None:
        request = b""
        with suppress(trio.BrokenResourceError):
            while b"\r\n\r\n" not in request:
                data = await stream.receive_some(65536)
                if not data:
                    return
                request += data
            for piece in answer:
                await stream.send_all(piece)
                await trio.sleep(PAUSE)
            while await stream.receive_some(65536):
                pass

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(30):  # a hang fails the test rather than the suite
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, handle, listeners)
            yield f"http://127.0.0.1:{port}/hub/api/"
            nursery.cancel_scope.cancel()


async def get(url: str, *, max_head: int = MAX_HEAD, max_body: int = MAX_BODY) -> httpx.Response:
    async with httpx.AsyncClient(transport=TrioH11Transport(max_head=max_head, max_body=max_body)) as client:
        return await client.get(url)


async def test_a_head_over_the_given_limit_is_refused_though_far_under_the_default() -> None:
    # 8 KiB of header lines that never end, against a limit of 2 KiB: the client must give up at its own limit
    # (with the default one, 64 KiB, it would wait for the rest forever).
    endless = b"HTTP/1.1 200 OK\r\n" + header_lines(8000)
    async with answering_in_pieces(pieces(endless, 100)) as url:
        with pytest.raises(httpx.RemoteProtocolError):
            await get(url, max_head=2048)


async def test_a_head_over_the_default_limit_is_read_when_the_given_one_allows_it() -> None:
    head = b"HTTP/1.1 200 OK\r\n" + header_lines(MAX_HEAD + 16000) + b"Content-Length: 2\r\n\r\n"
    async with answering_in_pieces([*pieces(head, 4000), b"ok"]) as url:
        response = await get(url, max_head=MAX_HEAD + 32000)
    assert (response.status_code, response.content) == (200, b"ok")


@pytest.mark.parametrize(("length", "accepted"), [(1000, True), (1001, False)])
async def test_the_body_limit_is_inclusive(length: int, accepted: bool) -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % length + b"x" * length
    async with answering_in_pieces(pieces(answer, 300)) as url:
        if accepted:
            response = await get(url, max_body=1000)
            assert response.content == b"x" * 1000
        else:
            with pytest.raises(httpx.RemoteProtocolError, match="longer than 1000 bytes"):
                await get(url, max_body=1000)
