"""``_transport.TrioH11Transport`` (h11 on trio streams, under httpx) against real loopback servers.

What this proves:

- it agrees with h11 as the server: for random valid answers (any status from 200 to 599, random header names
  and values, bodies framed by Content-Length or chunked, trailers, 1xx answers in front) that arrive split at
  random byte boundaries, httpx returns the status, headers and body h11 sent, and one connection carries them
  all; h11 in turn reads the requests as httpx meant them;
- what h11 refuses is refused (``httpx.RemoteProtocolError``) and its connection closed; its policy on top: at
  most MAX_INFORMATIONAL 1xx answers, no unasked 101, bounded heads and bodies;
- which answers leave a connection fit for reuse (h11 back to IDLE on both sides, nothing after the answer);
- broken and hostile servers: a close mid-answer, a reset, two answers to one request, an unasked answer on an
  idle connection, an endless head, an endless 1-byte-chunk body in bounded memory, a trickle the caller's
  deadline cuts;
- the pool: an idle connection the server closed (or wrote to) is replaced before it is used, a reused
  connection closed as the request went out costs one more attempt on a new one and not a failure, a
  cancellation at any await closes the connection it interrupts, ``aclose()`` closes idle connections;
- over TLS (certificates from trustme): the same reading and reuse, the end of the connection without
  close-notify, bytes hidden in a later TLS record, and one TLS context for all connections.

Every server is a trio listener on 127.0.0.1, port 0, that runs a script for each connection it accepts and
records the connections and requests it saw: reuse is counted on the server's side, not inferred from the client.
"""

from __future__ import annotations

import gzip
import re
import socket
import ssl
import struct
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from http.cookiejar import CookieJar, DefaultCookiePolicy
from itertools import pairwise
from typing import Any

import attrs
import h11
import httpx
import pytest
import trio
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_culler import _transport
from trio_culler._errors import AnswerTooLarge
from trio_culler._transport import MAX_BODY_EXTENSION, MAX_HEAD, MAX_INFORMATIONAL, TrioH11Transport

from .support.net import dead_port

#: No test needs more than a fraction of a second; one that takes this long has hung.
HANG_GUARD = 5.0
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
#: A step of :func:`answering`: read the request and answer nothing.
NOTHING = b""
#: A step of :func:`answering`: close the connection (the steps after it go to the next connection).
HANG_UP = None


# ------------------------------------------------------------------------------------------ the scripted server


@attrs.define(eq=False)
class Peer:
    """The server's end of one accepted connection."""

    #: The TCP connection, or the TLS stream over it.
    stream: trio.abc.Stream
    tcp: trio.SocketStream
    #: 0 for the first connection the server accepted, 1 for the second, ...
    index: int
    #: Each complete request read on this connection, as it arrived.
    requests: list[bytes] = attrs.Factory(list)
    #: Set when the server found the client's end closed (it read EOF, or the connection was reset).
    client_closed: trio.Event = attrs.Factory(trio.Event)
    #: Set once the server has closed its end.
    closed: trio.Event = attrs.Factory(trio.Event)
    buffer: bytearray = attrs.Factory(bytearray)

    async def receive(self) -> bool:
        """Read more into the buffer; False once the client has closed its end."""
        try:
            data = await self.stream.receive_some(65536)
        except trio.BrokenResourceError:
            data = b""
        if not data:
            self.client_closed.set()
            return False
        self.buffer += data
        return True

    async def read_request(self) -> bytes | None:
        """The next complete request (its head, and the body its Content-Length announces), or None if the
        client closed the connection instead."""
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            if not await self.receive():
                return None
        length = re.search(rb"\r\ncontent-length: *([0-9]+)", self.buffer[:end], re.IGNORECASE)
        total = end + 4 + (int(length.group(1)) if length else 0)
        while len(self.buffer) < total:
            if not await self.receive():
                return None
        request = bytes(self.buffer[:total])
        del self.buffer[:total]
        self.requests.append(request)
        return request

    async def wait_for_eof(self) -> None:
        """Keep the connection open until the client closes it."""
        while await self.receive():
            pass

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    def reset(self) -> None:
        """Drop the connection with a TCP RST (linger 0) instead of an orderly FIN."""
        self.tcp.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.tcp.socket.close()

    @contextmanager
    def corked(self) -> Iterator[None]:
        """Hold back what is sent in the block and let it go as one TCP segment at its end (Linux's TCP_CORK)."""
        self.tcp.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        try:
            yield
        finally:
            self.tcp.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)


Script = Callable[[Peer], Awaitable[None]]


@attrs.define(eq=False)
class Server:
    scheme: str = "http"
    port: int = 0
    #: One per accepted connection, in the order accepted.
    peers: list[Peer] = attrs.Factory(list)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/hub/api/users"

    @property
    def connections(self) -> int:
        return len(self.peers)


@asynccontextmanager
async def serve(
    script: Script, *, ssl_context: ssl.SSLContext | None = None, hang_guard: float = HANG_GUARD
) -> AsyncIterator[Server]:
    """A loopback server (TLS with ``ssl_context``) that runs ``script`` on every connection it accepts, for the
    duration of the block, which fails with TooSlowError after ``hang_guard`` seconds rather than hang."""
    server = Server("https" if ssl_context else "http")
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    server.port = listeners[0].socket.getsockname()[1]

    async def handle(tcp: trio.SocketStream) -> None:
        stream = trio.SSLStream(tcp, ssl_context, server_side=True) if ssl_context else tcp
        peer = Peer(stream, tcp, len(server.peers))
        server.peers.append(peer)
        try:
            await script(peer)
        except trio.BrokenResourceError:
            peer.client_closed.set()  # the client hung up while the script was writing: several tests provoke it
        finally:
            await trio.aclose_forcefully(stream)
            peer.closed.set()

    with trio.fail_after(hang_guard):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(trio.serve_listeners, handle, listeners))
            try:
                yield server
            finally:
                nursery.cancel_scope.cancel()


def answering(*steps: bytes | None) -> Script:
    """A script shared by all connections: each step in turn either reads a request and writes the bytes given,
    or (:data:`HANG_UP`) closes the connection. A connection the client closes leaves its pending step to the next
    connection. When the steps run out the connection stays open until the client closes it (a request sent on
    it then gets no answer, and the test fails on its hang guard)."""
    pending = list(steps)

    async def script(peer: Peer) -> None:
        while pending:
            if pending[0] is HANG_UP:
                pending.pop(0)
                return
            if await peer.read_request() is None:
                return
            answer = pending.pop(0)
            assert answer is not None
            await peer.send(answer)
        await peer.wait_for_eof()

    return script


def always(answer: bytes) -> Script:
    """A script that answers every request with the same bytes."""

    async def script(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await peer.send(answer)

    return script


@asynccontextmanager
async def open_client(
    ssl_context: ssl.SSLContext | None = None, **options: int
) -> AsyncIterator[tuple[httpx.AsyncClient, TrioH11Transport]]:
    transport = TrioH11Transport(ssl_context=ssl_context, **options)
    # No cookie jar, as in the hub client: the random answers set cookies with values httpx cannot send back.
    async with httpx.AsyncClient(
        transport=transport, cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[]))
    ) as client:
        yield client, transport


async def first_then_ok(first: bytes, *, hang_up: bool = False) -> tuple[httpx.Response, Server]:
    """Answer one request with ``first`` (then close the connection if ``hang_up``) and a second request with OK.
    Returns the first response and the server, whose ``connections`` tells whether the pool reused the first
    connection for the second request (1) or opened another (2)."""
    steps = [first, HANG_UP, OK] if hang_up else [first, OK]
    async with serve(answering(*steps)) as server, open_client() as (client, _transport):
        response = await client.get(server.url)
        second = await client.get(server.url)
        assert (second.status_code, second.content) == (200, b"ok")
    return response, server


# ------------------------------------------------------------------------------------------ h11 as the reference


TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
#: What a field value or reason phrase may contain: visible ASCII, obs-text (bytes 0x80-0xFF), space and tab.
VALUE_CHARS = "".join(map(chr, [*range(0x21, 0x7F), *range(0x80, 0x100)])) + " \t"
#: Headers that frame the message: each example sets them itself, consistently with its body. (A content coding
#: would make httpx decode the body: not the transport's business.)
FRAMING_NAMES = {b"content-length", b"transfer-encoding", b"connection", b"content-encoding"}

Fields = list[tuple[bytes, bytes]]

header_names = st.sampled_from([b"Set-Cookie", b"X-Repeated"]) | st.text(TOKEN_CHARS, min_size=1, max_size=16).map(
    lambda name: name.encode("ascii")
).filter(lambda name: name.lower() not in FRAMING_NAMES)
# A field value neither starts nor ends with whitespace (RFC 9110 §5.5), so h11 would refuse to send one that did.
header_values = st.text(VALUE_CHARS, max_size=40).map(lambda value: value.encode("latin-1").strip(b" \t"))
fields = st.lists(st.tuples(header_names, header_values), max_size=8)


@attrs.frozen
class ReferenceAnswer:
    """One answer for h11 to write, and where its bytes are cut on the wire."""

    informational: list[tuple[int, Fields]]
    status: int
    reason: bytes
    #: As given to h11, framing header included; h11 writes them in this order.
    headers: Fields
    #: The body as h11 Data events: each one a chunk when chunked.
    pieces: list[bytes]
    trailers: Fields
    #: Offsets at which the bytes are sent separately (taken modulo their length).
    cuts: list[int]

    @property
    def body(self) -> bytes:
        return b"".join(self.pieces)


@st.composite
def reference_answers(draw: st.DrawFn) -> ReferenceAnswer:
    status = draw(st.sampled_from([204, 304]) | st.integers(min_value=200, max_value=599))
    headers = draw(fields)
    pieces: list[bytes] = []
    trailers: Fields = []
    if status not in (204, 304):  # those have no body, and no framing header is needed
        pieces = draw(st.lists(st.binary(max_size=300), max_size=6))
        if draw(st.booleans()):
            # h11 moves Transfer-Encoding to the end of the headers: put it there, so the order is what h11 writes.
            headers.append((b"Transfer-Encoding", b"chunked"))
            trailers = draw(fields)
        else:
            name = draw(st.sampled_from([b"Content-Length", b"content-length", b"CONTENT-length"]))
            length = str(sum(map(len, pieces))).encode("ascii")
            headers.insert(draw(st.integers(min_value=0, max_value=len(headers))), (name, length))
    return ReferenceAnswer(
        informational=draw(st.lists(st.tuples(st.sampled_from([100, 102, 103]), fields), max_size=2)),
        status=status,
        reason=draw(st.text(VALUE_CHARS, max_size=20)).encode("latin-1"),
        headers=headers,
        pieces=pieces,
        trailers=trailers,
        cuts=draw(st.lists(st.integers(min_value=0, max_value=1 << 20), max_size=8)),
    )


def h11_bytes(connection: h11.Connection, answer: ReferenceAnswer) -> bytes:
    """The bytes h11, as a server that has read a request, writes for ``answer``."""
    events: list[h11.Event] = [
        *(h11.InformationalResponse(status_code=status, headers=fields) for status, fields in answer.informational),
        h11.Response(status_code=answer.status, reason=answer.reason, headers=answer.headers),
        *(h11.Data(data=piece) for piece in answer.pieces),
        h11.EndOfMessage(headers=answer.trailers),
    ]
    return b"".join(connection.send(event) or b"" for event in events)


def cut(data: bytes, offsets: list[int]) -> list[bytes]:
    bounds = sorted({0, len(data), *(offset % (len(data) + 1) for offset in offsets)})
    return [data[start:end] for start, end in pairwise(bounds)]


@attrs.frozen
class ReceivedRequest:
    method: bytes
    target: bytes
    headers: Fields
    body: bytes


async def h11_read_request(peer: Peer, connection: h11.Connection) -> ReceivedRequest:
    """The next request, as h11 reads it from the client's bytes."""
    request: h11.Request | None = None
    body = bytearray()
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(bytes(await peer.stream.receive_some(65536)))
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert request is not None
            return ReceivedRequest(request.method, request.target, list(request.headers), bytes(body))
        else:
            raise AssertionError(f"h11 read {event!r} where a request was expected")


def h11_order(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The order h11 writes headers in: any Host first (RFC 9110 asks it of requests; h11 does it for every
    message), the rest as given."""
    return [h for h in headers if h[0] == b"host"] + [h for h in headers if h[0] != b"host"]


@settings(max_examples=60, deadline=None)
@given(answers=st.lists(reference_answers(), min_size=1, max_size=3))
async def test_answers_written_by_h11_are_read_exactly(answers: list[ReferenceAnswer]) -> None:
    received: list[ReceivedRequest] = []

    async def h11_server(peer: Peer) -> None:
        connection = h11.Connection(h11.SERVER)
        for answer in answers:
            received.append(await h11_read_request(peer, connection))
            for piece in cut(h11_bytes(connection, answer), answer.cuts):
                await peer.send(piece)
                await trio.lowlevel.checkpoint()  # a scheduling round: the client may read this piece before the next
            connection.start_next_cycle()
        await peer.wait_for_eof()

    # A hang (the client waiting for bytes that never come) fails each example soon: shrinking tries many.
    async with serve(h11_server, hang_guard=1.0) as server, open_client() as (client, _transport):
        for index, answer in enumerate(answers):
            # Both kinds of request the culler sends: a GET without a body and a DELETE with one.
            body = b'{"remove": true}' if index % 2 else b""
            method, target = ("DELETE", "/hub/api/users/a%20b/server") if body else ("GET", "/hub/api/users?offset=0")
            response = await client.request(method, f"http://127.0.0.1:{server.port}{target}", content=body or None)
            assert response.status_code == answer.status
            assert list(response.headers.raw) == h11_order([(name.lower(), value) for name, value in answer.headers])
            assert response.content == answer.body
            request = received[index]
            assert (request.method, request.target, request.body) == (method.encode(), target.encode(), body)
            assert (b"host", f"127.0.0.1:{server.port}".encode()) in request.headers
            assert ((b"content-length", b"16") in request.headers) == bool(body)
    # Every answer was complete, length-delimited HTTP/1.1 with keep-alive: one connection carried them all.
    assert server.connections == 1


async def test_an_answer_is_left_as_httpx_leaves_one_it_has_read() -> None:
    """An unencoded body already in memory is marked read rather than run through httpx's decoders: what the
    caller gets is what ``read()`` would have left (content, JSON, closed and consumed, bytes counted)."""
    body = b'{"users": [1, 2]}'
    response, _server = await first_then_ok(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )
    reference = httpx.Response(200, headers=response.headers, stream=httpx.ByteStream(body), request=response.request)
    reference.read()

    def seen(answer: httpx.Response) -> tuple[object, ...]:
        return (answer.content, answer.json(), answer.is_closed, answer.is_stream_consumed, answer.num_bytes_downloaded)

    assert seen(response) == seen(reference) == (body, {"users": [1, 2]}, True, True, len(body))


def test_an_httpx_whose_read_leaves_more_turns_the_in_place_read_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _transport._reads_alike(), "this httpx reads as the transport expects: answers are marked read"

    def forgets_to_close(response: httpx.Response, body: bytes) -> None:
        response._content = body
        response._num_bytes_downloaded = len(body)
        response.is_stream_consumed = True

    monkeypatch.setattr(_transport, "_mark_read", forgets_to_close)
    assert not _transport._reads_alike()


async def test_header_lists_are_validated_by_h11_once_and_bad_ones_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """h11 validates a header list the first time the transport sees it, then takes its validated form; a
    header h11 refuses is refused on every request, and the lists kept are bounded."""
    validations: list[int] = []
    real = h11.Request

    def counting(**kwargs: Any) -> h11.Request:
        if isinstance(kwargs.get("headers"), list):
            validations.append(1)
        return real(**kwargs)

    monkeypatch.setattr(h11, "Request", counting)
    async with serve(answering(*[OK] * 5)) as server, open_client() as (client, transport):
        for _ in range(3):
            assert (await client.get(server.url, headers={"X-Same": "1"})).content == b"ok"
        assert len(validations) == 1, "one list, validated once"
        for _ in range(2):
            with pytest.raises(httpx.LocalProtocolError):
                await client.get(server.url, headers={"X-Bad": "a\x00b"})
        assert len(validations) == 3, "a refused list is never kept: validated (and refused) each time"
        assert (await client.get(server.url, headers={"X-Other": "2"})).content == b"ok"
        for number in range(2 * _transport._HEADER_SETS):
            transport._headers.checked(httpx.Request("GET", server.url, headers={"X-N": str(number)}))
        assert 0 < len(transport._headers._checked) <= _transport._HEADER_SETS


async def test_an_answer_trickling_in_byte_by_byte() -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\nX-A: b\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;ext=1\r\nabc\r\n1\r\nd\r\n0\r\nX-Trailer: t\r\n\r\n"
    )

    async def trickle(peer: Peer) -> None:
        while await peer.read_request() is not None:
            for index in range(len(answer)):
                await peer.send(answer[index : index + 1])
                await trio.sleep(0.001)  # long enough for the client to read each byte on its own

    async with serve(trickle) as server, open_client() as (client, _transport):
        for _ in range(2):
            response = await client.get(server.url)
            assert (response.status_code, list(response.headers.raw), response.content) == (
                200,
                [(b"x-a", b"b"), (b"transfer-encoding", b"chunked")],
                b"abcd",
            )
    assert server.connections == 1


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_body_larger_than_one_read(framing: str) -> None:
    body = bytes(range(256)) * 1200  # 300 kB: several reads of 64 kB
    if framing == "chunked":
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:70_000], body[70_000:]))
        answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    else:
        answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    response, server = await first_then_ok(answer)
    assert response.content == body
    assert server.connections == 1


# ------------------------------------------------------------------------------------------ refusals


def head_of(length: int) -> bytes:
    """A status line and header lines of about ``length`` bytes in all, without the blank line that ends a head."""
    pad = b"X-Pad: " + b"a" * 1000 + b"\r\n"
    lines = b"HTTP/1.1 200 OK\r\n" + pad * (length // len(pad))
    return lines + b"X-End: " + b"b" * max(1, length - len(lines) - 9) + b"\r\n"


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"

REFUSED = [
    pytest.param(b"ICY 200 OK\r\n\r\n", id="not HTTP"),
    pytest.param(b"HTTP/2 200\r\n\r\n", id="HTTP/2"),
    pytest.param(b"http/1.1 200 OK\r\n\r\n", id="lower-case HTTP"),
    pytest.param(b"HTTP/1.1 20 OK\r\n\r\n", id="two-digit status"),
    pytest.param(b"HTTP/1.1 2000 OK\r\n\r\n", id="four-digit status"),
    pytest.param(b"HTTP/1.1 099 Odd\r\nContent-Length: 2\r\n\r\nhi", id="status 099"),
    pytest.param(b"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n", id="header without colon"),
    pytest.param(b"HTTP/1.1 200 OK\r\nX-A : b\r\n\r\n", id="space before colon"),
    pytest.param(b"HTTP/1.1 200 OK\r\n: b\r\n\r\n", id="empty header name"),
    pytest.param(b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\n\r\n", id="NUL in value"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", id="conflicting CLs"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nok", id="conflicting list"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: two\r\n\r\nok", id="CL word"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nok", id="CL negative"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok", id="CL plus sign"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 0x2\r\n\r\nok", id="CL hex"),
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok", id="TE gzip"),
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", id="TE list"),
    pytest.param(CHUNKED_HEAD + b"zz\r\nok\r\n0\r\n\r\n", id="chunk size not hex"),
    pytest.param(CHUNKED_HEAD + b"0x2\r\nok\r\n0\r\n\r\n", id="chunk size 0x"),
    pytest.param(CHUNKED_HEAD + b"\r\nok\r\n0\r\n\r\n", id="empty chunk size line"),
    pytest.param(CHUNKED_HEAD + b"2\r\nokXX0\r\n\r\n", id="chunk data without CRLF"),
    pytest.param(CHUNKED_HEAD + b"2\r\nok\r\n0\r\nNoColon\r\n\r\n", id="bad trailer"),
    # h11 counts what it buffers of an incomplete head: one that arrives whole within a read or two may pass
    # MAX_HEAD a little, twice that never.
    pytest.param(head_of(2 * MAX_HEAD) + b"Content-Length: 2\r\n\r\nok", id="head over MAX_HEAD"),
    # Never ends: the client must give up after MAX_HEAD bytes rather than wait for the rest.
    pytest.param(head_of(MAX_HEAD + 2000), id="endless head"),
    pytest.param(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", id="101 unasked"
    ),
    pytest.param(b"HTTP/1.1 100 Continue\r\n\r\n" * (MAX_INFORMATIONAL + 1), id="too many 1xx"),
]


@pytest.mark.parametrize("answer", REFUSED)
async def test_answers_that_are_refused(answer: bytes) -> None:
    async with serve(answering(answer)) as server, open_client() as (client, transport):
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(server.url)
        # A refused answer's connection is closed at once, not kept for the next request.
        await server.peers[0].client_closed.wait()
    assert transport.connections_opened == 1


async def test_a_head_just_under_max_head_is_accepted() -> None:
    response, server = await first_then_ok(head_of(MAX_HEAD - 1000) + b"Content-Length: 2\r\n\r\nok")
    assert (response.status_code, response.content) == (200, b"ok")
    assert server.connections == 1


async def test_a_body_over_the_limit_is_refused() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n" + b"x" * 2000
    async with serve(answering(answer)) as server, open_client(max_body=1000) as (client, _transport):
        with pytest.raises(httpx.RemoteProtocolError, match="longer than 1000 bytes"):
            await client.get(server.url)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_request_can_cap_its_answer_below_the_transports_limit(framing: str) -> None:
    """The cap is inclusive: an answer of exactly the cap is read; one byte more is refused."""
    body = b"x" * 1000

    def framed(data: bytes) -> bytes:
        if framing == "chunked":
            return CHUNKED_HEAD + b"%x\r\n" % len(data) + data + b"\r\n0\r\n\r\n"
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(data) + data

    async with serve(answering(framed(body), framed(body + b"x"), OK)) as server, open_client() as (client, _t):
        capped = {MAX_BODY_EXTENSION: 1000}
        assert (await client.get(server.url, extensions=capped)).content == body
        with pytest.raises(AnswerTooLarge, match="longer than 1000 bytes"):
            await client.get(server.url, extensions=capped)
        assert (await client.get(server.url)).content == b"ok", "the refused answer's connection was closed"
    assert server.connections == 2


async def test_a_compressed_answer_to_a_capped_request_is_refused() -> None:
    """Whatever its bytes on the wire, a compressed body could unpack to far more than the cap: refused when the
    request has one; a request without a cap (the hub's) still gets it decoded."""
    unpacked = b"[" + b"{}," * 300_000 + b"{}]"
    bomb = gzip.compress(unpacked)
    answer = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(bomb) + bomb
    assert len(bomb) < 10_000
    async with serve(answering(answer, answer)) as server, open_client() as (client, _transport):
        with pytest.raises(AnswerTooLarge, match="compressed"):
            await client.get(server.url, extensions={MAX_BODY_EXTENSION: 10_000})
        assert (await client.get(server.url)).content == unpacked


async def test_a_request_cancelled_before_it_starts_sends_nothing_and_keeps_the_pooled_connection() -> None:
    """The transport checks for cancellation before anything else: the hub client relies on it to take a free
    limiter token without a checkpoint of its own. Neither a byte nor the idle connection is spent."""
    async with serve(answering(OK, OK)) as server, open_client() as (client, transport):
        assert (await client.get(server.url)).content == b"ok"
        with trio.CancelScope() as scope:
            scope.cancel()
            await transport.handle_async_request(httpx.Request("GET", server.url))
        assert scope.cancelled_caught
        assert (await client.get(server.url)).content == b"ok"
    assert server.connections == 1, "the pooled connection was neither used nor closed by the cancelled request"
    assert len(server.peers[0].requests) == 2


# ------------------------------------------------------------------------------------------ framing


async def test_a_few_informational_answers_are_skipped() -> None:
    response, server = await first_then_ok(
        b"HTTP/1.1 100 Continue\r\n\r\n"
        * (MAX_INFORMATIONAL - 1)
        + b"HTTP/1.1 103 Early Hints\r\nLink: </hub/static/a.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX-Final: yes\r\n\r\nbody"
    )
    assert response.status_code == 200
    assert list(response.headers.raw) == [(b"content-length", b"4"), (b"x-final", b"yes")]  # none from the 1xx
    assert response.content == b"body"
    assert server.connections == 1


async def test_a_status_above_599_is_an_ordinary_answer() -> None:
    # RFC 9110 §15: a status the client does not know is the x00 of its class, or a server error; that is the hub
    # client's business, so the transport passes it on as it came.
    response, server = await first_then_ok(b"HTTP/1.1 999 Custom\r\nContent-Length: 2\r\n\r\nhi")
    assert (response.status_code, response.content) == (999, b"hi")
    assert server.connections == 1


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", id="204 with Content-Length 0"),
        pytest.param(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", id="304 with Content-Length"),
        pytest.param(b"HTTP/1.1 204 No Content\r\n\r\n", id="204 without framing"),
    ],
)
async def test_204_and_304_have_no_body(answer: bytes) -> None:
    response, server = await first_then_ok(answer)
    assert response.content == b""
    # Had the client waited for 5 bytes of body, the second request would hang; had it read the next answer as
    # this one's body, the second would fail. It did neither, and kept the connection.
    assert server.connections == 1


async def test_an_answer_to_head_has_no_body() -> None:
    async with (
        serve(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", OK)) as server,
        open_client() as (client, _transport),
    ):
        response = await client.head(server.url)
        assert (response.status_code, response.headers["Content-Length"], response.content) == (200, "1234", b"")
        assert (await client.get(server.url)).content == b"ok"
    assert server.connections == 1


async def test_a_body_delimited_by_the_connections_end() -> None:
    body = b"to the end " * 10_000  # over 100 kB, so several reads
    response, server = await first_then_ok(b"HTTP/1.1 200 OK\r\nX-A: b\r\n\r\n" + body, hang_up=True)
    assert (response.status_code, list(response.headers.raw), response.content) == (200, [(b"x-a", b"b")], body)
    assert server.connections == 2  # a connection that has ended cannot carry another request


async def test_chunk_extensions_and_trailers_are_read_and_ignored() -> None:
    response, server = await first_then_ok(
        CHUNKED_HEAD + b'2;name=value\r\nok\r\n3;a="b;c"\r\n!!!\r\n0;last\r\nX-T1: 1\r\nX-T2: 2\r\n\r\n'
    )
    assert response.content == b"ok!!!"
    assert list(response.headers.raw) == [(b"transfer-encoding", b"chunked")]  # trailers are not merged in
    assert server.connections == 1


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", id="HTTP/1.0"),
        pytest.param(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", id="1.0 keep-alive"),
        pytest.param(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", id="Connection close"),
        pytest.param(b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, CLOSE\r\nContent-Length: 2\r\n\r\nok", id="list"),
        # RFC 9112 §6.3: chunked wins, but an answer framed two ways was meant to mislead someone.
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            id="chunked and Content-Length",
        ),
        # Two answers to one request, in the same write.
        pytest.param(OK + OK, id="two answers"),
        pytest.param(CHUNKED_HEAD + b"2\r\nok\r\n0\r\n\r\n\r\n", id="CRLF after chunked"),
    ],
)
async def test_answers_whose_connection_is_not_reused(answer: bytes) -> None:
    response, server = await first_then_ok(answer)
    assert (response.status_code, response.content) == (200, b"ok")
    assert server.connections == 2


# ------------------------------------------------------------------------------------------ broken connections


@pytest.mark.parametrize(
    "steps",
    [
        pytest.param([NOTHING, HANG_UP], id="closes without answering"),
        pytest.param([HANG_UP], id="closes before reading the request"),
        pytest.param([b"HTT", HANG_UP], id="mid status line"),
        pytest.param([b"HTTP/1.1 200 OK\r\nContent-Len", HANG_UP], id="mid head"),
        pytest.param([b"HTTP/1.1 100 Continue\r\n\r\n", HANG_UP], id="after 100 Continue"),
        pytest.param([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", HANG_UP], id="mid body"),
        pytest.param([CHUNKED_HEAD, HANG_UP], id="before the first chunk"),
        pytest.param([CHUNKED_HEAD + b"5\r\nhel", HANG_UP], id="mid chunk"),
        pytest.param([CHUNKED_HEAD + b"5\r\nhello\r\n", HANG_UP], id="before the last chunk"),
        pytest.param([CHUNKED_HEAD + b"5\r\nhello\r\n0\r\nX-T: 1\r\n", HANG_UP], id="mid trailers"),
    ],
)
async def test_a_connection_closed_before_the_answer_is_complete(steps: list[bytes | None]) -> None:
    async with serve(answering(*steps)) as server, open_client() as (client, transport):
        # A new connection that breaks is not tried again: the hub client decides about retries.
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            await client.get(server.url)
    assert transport.connections_opened == 1


async def test_a_connection_reset_mid_answer() -> None:
    async def reset_mid_body(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
        peer.reset()

    async with serve(reset_mid_body) as server, open_client() as (client, _transport):
        with pytest.raises(httpx.ReadError, match="connection lost"):
            await client.get(server.url)


async def test_a_port_nobody_listens_on() -> None:
    port = dead_port()
    async with open_client() as (client, _transport):
        with trio.fail_after(HANG_GUARD), pytest.raises(httpx.ConnectError) as caught:
            await client.get(f"http://127.0.0.1:{port}/hub/api/")
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message
    assert "refused" in message.lower()


async def test_a_scheme_other_than_http_is_refused() -> None:
    async with TrioH11Transport() as transport:
        with pytest.raises(httpx.UnsupportedProtocol):
            await transport.handle_async_request(httpx.Request("GET", "ftp://127.0.0.1/"))


# ------------------------------------------------------------------------------------------ hostile servers


async def test_an_endless_stream_of_100_continue_ends_at_the_cap() -> None:
    sent = 0

    async def continue_forever(peer: Peer) -> None:
        nonlocal sent
        await peer.read_request()
        while True:
            await peer.send(b"HTTP/1.1 100 Continue\r\n\r\n" * 100)
            sent += 100

    async with serve(continue_forever) as server, open_client() as (client, _transport):
        with pytest.raises(httpx.RemoteProtocolError, match="informational"):
            await client.get(server.url)
        await server.peers[0].client_closed.wait()
    assert sent >= MAX_INFORMATIONAL


async def test_an_endless_body_of_1_byte_chunks_is_cut_by_the_deadline_in_bounded_memory() -> None:
    sent = 0
    going = trio.Event()

    async def one_byte_chunks_forever(peer: Peer) -> None:
        nonlocal sent
        await peer.read_request()
        await peer.send(CHUNKED_HEAD)
        piece = b"1\r\nx\r\n" * 4096
        while True:
            await peer.send(piece)
            sent += len(piece)
            if sent > 1024 * 1024:
                going.set()

    async with serve(one_byte_chunks_forever, hang_guard=60) as server, open_client() as (client, _transport):
        tracemalloc.start()
        try:
            async with trio.open_nursery() as nursery:

                async def request() -> None:
                    # The caller's deadline (the hub client's per-request one) ends it: every read is a checkpoint,
                    # so the cancellation gets its turn although the socket is never empty.
                    await client.get(server.url)

                nursery.start_soon(request)
                await going.wait()
                nursery.cancel_scope.cancel()
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        await server.peers[0].client_closed.wait()
    body_bytes = sent // 6  # each chunk is 6 bytes on the wire for 1 byte of body
    # One growing buffer: the memory follows the body's size (plus read buffers), not the number of chunks.
    assert peak < 3 * body_bytes + 4 * 1024 * 1024, (peak, sent)


async def test_a_trickle_is_cut_by_the_callers_deadline() -> None:
    async def trickle_forever(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
        while True:
            await peer.send(b"x")
            await trio.sleep(0.01)

    async with serve(trickle_forever) as server, open_client() as (client, transport):
        with trio.move_on_after(0.3) as deadline:
            await client.get(server.url)
        assert deadline.cancelled_caught
        await server.peers[0].client_closed.wait()  # the cancelled request's connection was closed
    assert transport.connections_opened == 1


# ------------------------------------------------------------------------------------------ the pool


async def test_an_idle_connection_the_server_closed_is_replaced() -> None:
    async with serve(answering(OK, HANG_UP, OK)) as server, open_client() as (client, _transport):
        assert (await client.get(server.url)).content == b"ok"
        await server.peers[0].closed.wait()  # the server closed the connection while it was idle in the pool
        assert (await client.get(server.url)).content == b"ok"
    assert server.connections == 2
    assert len(server.peers[0].requests) == 1  # the second request was not sent into the closed connection


async def test_an_idle_connection_with_unasked_bytes_is_replaced() -> None:
    sent = trio.Event()

    async def answer_then_babble(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await peer.send(OK)
            if peer.index == 0:
                await trio.sleep(0.05)  # a separate write, after the client has read the answer
                await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nnope!")  # an answer to no request
                sent.set()

    async with serve(answer_then_babble) as server, open_client() as (client, _transport):
        assert (await client.get(server.url)).content == b"ok"
        await sent.wait()
        # Had the pool reused the connection, this request would have got the unasked answer.
        assert (await client.get(server.url)).content == b"ok"
        await server.peers[0].client_closed.wait()
    assert server.connections == 2
    assert len(server.peers[0].requests) == 1


async def test_a_reused_connection_closed_as_the_request_went_out_costs_one_more_attempt() -> None:
    async def close_on_the_second_request(peer: Peer) -> None:
        # The race a staleness check cannot see: the server's idle timeout fires just as the request arrives.
        while await peer.read_request() is not None:
            if peer.index == 0 and len(peer.requests) == 2:
                return
            await peer.send(OK)

    async with serve(close_on_the_second_request) as server, open_client() as (client, transport):
        for _ in range(3):
            assert (await client.get(server.url)).content == b"ok"
    assert transport.connections_opened == 2
    assert [len(peer.requests) for peer in server.peers] == [2, 2]


async def test_a_post_on_a_reused_connection_closed_without_an_answer_is_not_sent_twice() -> None:
    async def close_on_the_second_request(peer: Peer) -> None:
        while await peer.read_request() is not None:
            if len(peer.requests) == 2:
                return
            await peer.send(OK)

    async with serve(close_on_the_second_request) as server, open_client() as (client, transport):
        assert (await client.post(server.url, content=b"{}")).content == b"ok"
        with pytest.raises(httpx.RemoteProtocolError, match="without answering"):
            await client.post(server.url, content=b"{}")  # the server may have acted on it: not sent again
    assert transport.connections_opened == 1


async def test_a_fresh_connection_closed_without_an_answer_is_not_tried_again() -> None:
    async with serve(answering(NOTHING, HANG_UP, OK)) as server, open_client() as (client, transport):
        with pytest.raises(httpx.RemoteProtocolError, match="without answering"):
            await client.get(server.url)
    assert transport.connections_opened == 1


async def test_a_cancelled_request_closes_its_connection() -> None:
    async def stall_the_first(peer: Peer) -> None:
        while await peer.read_request() is not None:
            if peer.index == 0:
                await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
                await peer.wait_for_eof()  # the rest never comes
                return
            await peer.send(OK)

    async with serve(stall_the_first) as server, open_client() as (client, _transport):
        with trio.move_on_after(0.1) as scope:
            await client.get(server.url)
        assert scope.cancelled_caught
        # Half an answer is never reused: the interrupted connection is closed, not returned to the pool.
        await server.peers[0].client_closed.wait()
        assert (await client.get(server.url)).content == b"ok"
    assert server.connections == 2


class CountingStream(trio.abc.Stream):
    """A stream that counts the awaits made on it and cancels ``scope`` at the ``cancel_at``-th one."""

    def __init__(self, inner: trio.abc.Stream, counter: list[int], cancel_at: int, scope: trio.CancelScope) -> None:
        self.inner, self.counter, self.cancel_at, self.scope = inner, counter, cancel_at, scope

    def _tick(self) -> None:
        self.counter[0] += 1
        if self.counter[0] == self.cancel_at:
            self.scope.cancel()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self._tick()
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        self._tick()
        return await self.inner.receive_some(max_bytes)

    async def send_eof(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
async def test_a_cancellation_at_any_await_closes_the_connection_and_the_next_request_works(tls: bool) -> None:
    server_context, client_context = tls_contexts() if tls else (None, None)
    answer = CHUNKED_HEAD + b"2\r\nok\r\n0\r\n\r\n"

    async def slowly(peer: Peer) -> None:
        # The answer in three writes, so that reading it takes several awaits.
        while await peer.read_request() is not None:
            for piece in (answer[:10], answer[10:50], answer[50:]):
                await peer.send(piece)
                await trio.sleep(0.005)

    async def round_cancelled_at(url: str, cancel_at: int) -> bool:
        """Two requests with a cancellation at the ``cancel_at``-th await on the connection's stream; whether
        one happened (False: there were fewer awaits than that)."""
        transport = TrioH11Transport(ssl_context=client_context)
        async with httpx.AsyncClient(transport=transport) as client:
            counter = [0]
            original_connect = transport._connect
            with trio.CancelScope() as scope:

                async def connect(origin: tuple[bytes, bytes, int]) -> _transport._Connection:
                    connection = await original_connect(origin)
                    connection.stream = CountingStream(connection.stream, counter, cancel_at, scope)
                    return connection

                transport._connect = connect  # type: ignore[method-assign]
                # Two requests: the second reuses the connection (and checks it first), so the freshness check's
                # read is among the awaits cancelled.
                for _ in range(2):
                    assert (await client.get(url)).content == b"ok"
            if not scope.cancelled_caught:
                return False
            # Whatever was interrupted was closed, not pooled: the next request opens a new connection.
            opened = transport.connections_opened
            assert not any(transport._idle.values())
            transport._connect = original_connect  # type: ignore[method-assign]
            assert (await client.get(url)).content == b"ok"
            assert transport.connections_opened == opened + 1
        return True

    async with serve(slowly, ssl_context=server_context, hang_guard=30) as server:
        cancel_at = 1
        while await round_cancelled_at(server.url, cancel_at):
            cancel_at += 1
        # Every connection the server saw was closed by the client in the end: none leaked.
        for peer in server.peers:
            await peer.client_closed.wait()
    assert cancel_at > 4  # sends, reads of the three pieces, the freshness check, ...


async def test_concurrent_requests_each_take_a_connection_and_keep_it() -> None:
    responses: list[httpx.Response] = []

    async def fetch(client: httpx.AsyncClient, url: str) -> None:
        responses.append(await client.get(url))

    async with serve(always(OK)) as server, open_client() as (client, _transport):
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(fetch, client, server.url)
        assert server.connections == 3
        for _ in range(3):
            await fetch(client, server.url)
    assert [response.content for response in responses] == [b"ok"] * 6
    assert server.connections == 3  # the idle ones were reused


async def test_idle_connections_beyond_the_limit_are_closed() -> None:
    async with serve(always(OK)) as server, open_client(max_idle_per_origin=1) as (client, transport):
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(client.get, server.url)
        assert sum(map(len, transport._idle.values())) == 1
        assert sum(peer.client_closed.is_set() for peer in server.peers) in (1, 2)  # closed, or on their way


async def test_aclose_closes_idle_connections() -> None:
    async with serve(always(OK)) as server:
        transport = TrioH11Transport()
        async with httpx.AsyncClient(transport=transport) as client:
            for _ in range(2):
                assert (await client.get(server.url)).content == b"ok"
            assert server.connections == 1
            assert not server.peers[0].client_closed.is_set()  # idle in the pool, open
        await server.peers[0].client_closed.wait()  # the client's aclose() closed its transport


# ------------------------------------------------------------------------------------------ TLS


def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for 127.0.0.1, and a client context that trusts its CA."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


async def test_over_tls_answers_are_read_and_the_connection_kept() -> None:
    server_context, client_context = tls_contexts()
    chunked = CHUNKED_HEAD + b"2\r\nok\r\n0\r\n\r\n"
    async with (
        serve(answering(OK, chunked, OK), ssl_context=server_context) as server,
        open_client(client_context) as (client, _transport),
    ):
        for _ in range(3):
            assert (await client.get(server.url)).content == b"ok"
    assert server.connections == 1


async def test_over_tls_an_idle_connection_the_server_closed_is_replaced() -> None:
    server_context, client_context = tls_contexts()
    async with (
        serve(answering(OK, HANG_UP, OK), ssl_context=server_context) as server,
        open_client(client_context) as (client, _transport),
    ):
        assert (await client.get(server.url)).content == b"ok"
        await server.peers[0].closed.wait()
        assert (await client.get(server.url)).content == b"ok"
    assert server.connections == 2
    assert len(server.peers[0].requests) == 1


async def test_over_tls_a_body_delimited_by_the_connections_end_without_close_notify() -> None:
    server_context, client_context = tls_contexts()

    async def answer_and_drop(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\n\r\nto the end")
        # No TLS close-notify, only a TCP FIN: what many HTTPS servers do, and what HTTPS clients take for the end.
        await trio.aclose_forcefully(peer.stream)

    async with (
        serve(answer_and_drop, ssl_context=server_context) as server,
        open_client(client_context) as (client, _transport),
    ):
        response = await client.get(server.url)
    assert response.content == b"to the end"


@pytest.mark.skipif(not hasattr(socket, "TCP_CORK"), reason="needs Linux's TCP_CORK to put two records in one read")
async def test_over_tls_unasked_bytes_in_a_later_record_are_not_taken_for_the_next_answer() -> None:
    server_context, client_context = tls_contexts()

    async def answer_then_babble_in_the_same_segment(peer: Peer) -> None:
        while await peer.read_request() is not None:
            if peer.index == 0 and len(peer.requests) == 1:
                # Two TLS records (one per send) in one TCP segment: the client's first read takes in both, and
                # the second stays encrypted inside the TLS layer, invisible on the socket.
                with peer.corked():
                    await peer.send(OK)
                    await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nnope!")  # an answer to no request
            else:
                await peer.send(OK)

    async with (
        serve(answer_then_babble_in_the_same_segment, ssl_context=server_context) as server,
        open_client(client_context) as (client, _transport),
    ):
        assert (await client.get(server.url)).content == b"ok"
        assert (await client.get(server.url)).content == b"ok"
    assert server.connections == 2


async def test_the_default_tls_context_is_built_once(monkeypatch: pytest.MonkeyPatch) -> None:
    server_context, client_context = tls_contexts()
    built: list[ssl.SSLContext] = []

    def create_default_context(*args: object, **kwargs: object) -> ssl.SSLContext:
        built.append(client_context)  # the system's trust store would not know trustme's CA
        return client_context

    monkeypatch.setattr(ssl, "create_default_context", create_default_context)
    close = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    async with (
        serve(always(close), ssl_context=server_context) as server,
        open_client() as (client, transport),
    ):
        for _ in range(3):
            assert (await client.get(server.url)).content == b"ok"
    assert transport.connections_opened == 3
    assert len(built) == 1


async def test_a_certificate_for_another_name_fails_the_handshake() -> None:
    server_context, client_context = tls_contexts()
    async with serve(always(OK), ssl_context=server_context) as server, open_client(client_context) as (client, _t):
        with pytest.raises(httpx.ConnectError, match="TLS handshake") as caught:
            await client.get(f"https://localhost:{server.port}/")
    assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
