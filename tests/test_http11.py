"""The hand-written HTTP/1.1 client of ``_http11`` against real loopback servers that write scripted bytes.

What this proves:

- the codec agrees with h11 as the reference server: for random valid answers (any status from 200 to 599,
  random header names and values, bodies framed by Content-Length or chunked at random boundaries, trailers,
  1xx answers in front) that arrive split at random byte boundaries, the client returns the status, headers and
  body h11 sent, and one connection carries them all; h11 in turn reads the client's requests as they were meant;
- :func:`encode_request` writes exact bytes, and refuses request lines that could be split or misread;
- every answer RFC 9112 lets a client refuse is refused (:class:`ProtocolViolation`), and its connection closed;
- framing: 1xx answers skipped, 204 and 304 without a body, bodies that run to the connection's end, bare LF
  line ends; and which answers leave a connection fit for reuse (only a complete, length-delimited HTTP/1.1
  answer without ``Connection: close`` and with nothing after it);
- a connection that breaks before the answer is complete is :class:`ConnectionLost`, a refused port
  :class:`ConnectFailed`;
- the pool replaces an idle connection the server closed, closes the connection a cancellation interrupted, and
  closes its idle connections on ``aclose()``;
- over TLS (certificates from trustme) the same reading and reuse hold, and an answer delimited by the end of the
  connection is read even without a TLS close-notify, and bytes after an answer that arrive in a later TLS record
  of the same read (still encrypted inside the TLS layer, invisible on the socket) keep the connection from reuse.

Every server is a trio listener on 127.0.0.1, port 0, that runs a script for each connection it accepts and
records the connections and requests it saw: reuse is counted on the server's side, not inferred from the client.
"""

from __future__ import annotations

import re
import select
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from itertools import pairwise

import attrs
import h11
import pytest
import trio
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_culler._http11 import (
    MAX_HEAD,
    ConnectFailed,
    ConnectionLost,
    ConnectionPool,
    Origin,
    ProtocolViolation,
    RawResponse,
    _readable_now,
    encode_request,
)

from .faults_net import dead_port

#: No test needs more than a fraction of a second; one that takes this long has hung.
HANG_GUARD = 5.0
HOST = b"Host: 127.0.0.1\r\n"
GET = encode_request(b"GET", b"/hub/api/users", HOST)
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
    def origin(self) -> Origin:
        return Origin(self.scheme, "127.0.0.1", self.port)

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
async def open_pool(ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[ConnectionPool]:
    pool = ConnectionPool(ssl_context=ssl_context)
    try:
        yield pool
    finally:
        await pool.aclose()


async def first_then_ok(first: bytes, *, hang_up: bool = False) -> tuple[RawResponse, Server]:
    """Answer one request with ``first`` (then close the connection if ``hang_up``) and a second request with OK.
    Returns the first response and the server, whose ``connections`` tells whether the pool reused the first
    connection for the second request (1) or opened another (2)."""
    steps = [first, HANG_UP, OK] if hang_up else [first, OK]
    async with serve(answering(*steps)) as server, open_pool() as pool:
        response = await pool.request(server.origin, GET)
        second = await pool.request(server.origin, GET)
        assert (second.status, second.body) == (200, b"ok")
    return response, server


# ------------------------------------------------------------------------------------------ h11 as the reference


TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
#: What a field value or reason phrase may contain: visible ASCII, obs-text (bytes 0x80-0xFF), space and tab.
VALUE_CHARS = "".join(map(chr, [*range(0x21, 0x7F), *range(0x80, 0x100)])) + " \t"
#: Headers that frame the message: each example sets them itself, consistently with its body.
FRAMING_NAMES = {b"content-length", b"transfer-encoding", b"connection"}

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
    async with serve(h11_server, hang_guard=1.0) as server, open_pool() as pool:
        for index, answer in enumerate(answers):
            # Both kinds of request the culler sends: a GET without a body and a DELETE with one.
            body = b'{"remove": true}' if index % 2 else b""
            method, target = (
                (b"DELETE", b"/hub/api/users/a%20b/server") if body else (b"GET", b"/hub/api/users?offset=0")
            )
            response = await pool.request(server.origin, encode_request(method, target, HOST, body))
            assert response.status == answer.status
            assert list(response.headers) == h11_order([(name.lower(), value) for name, value in answer.headers])
            assert response.body == answer.body
            framing = [(b"content-length", str(len(body)).encode())] if body else []
            assert received[index] == ReceivedRequest(method, target, [(b"host", b"127.0.0.1"), *framing], body)
    # Every answer was complete, length-delimited HTTP/1.1 with keep-alive: one connection carried them all.
    assert server.connections == 1


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

    async with serve(trickle) as server, open_pool() as pool:
        for _ in range(2):
            response = await pool.request(server.origin, GET)
            assert (response.status, list(response.headers), response.body) == (
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
    assert response.body == body
    assert server.connections == 1


# ------------------------------------------------------------------------------------------ encode_request


def test_a_get_without_body_has_no_content_length() -> None:
    head = b"Host: hub:8081\r\nAuthorization: token abc\r\n"
    assert encode_request(b"GET", b"/hub/api/users?limit=200&offset=0", head) == (
        b"GET /hub/api/users?limit=200&offset=0 HTTP/1.1\r\nHost: hub:8081\r\nAuthorization: token abc\r\n\r\n"
    )


def test_an_empty_post_says_so() -> None:
    # RFC 9110 §8.6: a method that usually has a body gets Content-Length: 0 rather than none at all.
    assert (
        encode_request(b"POST", b"/x", b"Host: hub\r\n")
        == b"POST /x HTTP/1.1\r\nHost: hub\r\nContent-Length: 0\r\n\r\n"
    )
    assert encode_request(b"DELETE", b"/x", b"Host: hub\r\n") == b"DELETE /x HTTP/1.1\r\nHost: hub\r\n\r\n"


def test_a_delete_with_body_has_its_content_length() -> None:
    body = b'{"remove": true}'
    assert encode_request(b"DELETE", b"/hub/api/users/a%20b/servers/nb", b"Host: hub\r\n", body) == (
        b"DELETE /hub/api/users/a%20b/servers/nb HTTP/1.1\r\nHost: hub\r\nContent-Length: 16\r\n\r\n" + body
    )


@pytest.mark.parametrize(
    ("method", "target"),
    [
        pytest.param(b"GET", b"/a b", id="space in target"),
        pytest.param(b"GET", b"/a\r\nX-Injected: 1", id="CRLF in target"),
        pytest.param(b"GET", b"/a\nb", id="LF in target"),
        pytest.param(b"GET", b"/a\rb", id="CR in target"),
        pytest.param(b"GET", b"/a\x00b", id="NUL in target"),
        pytest.param(b"GET", b"/caf\xc3\xa9", id="non-ASCII target"),
        pytest.param(b"GET", b"http://hub/hub/api", id="absolute form"),
        pytest.param(b"OPTIONS", b"*", id="asterisk form"),
        pytest.param(b"GET", b"hub/api", id="relative target"),
        pytest.param(b"GET", b"", id="empty target"),
        pytest.param(b"GE T", b"/", id="space in method"),
        pytest.param(b"GET\r\n", b"/", id="CRLF in method"),
        pytest.param(b"G(ET)", b"/", id="separator in method"),
        pytest.param(b"", b"/", id="empty method"),
    ],
)
def test_malformed_request_lines_are_refused(method: bytes, target: bytes) -> None:
    with pytest.raises(ValueError, match="malformed request line"):
        encode_request(method, target, HOST)


# ------------------------------------------------------------------------------------------ refusals


def head_of(length: int) -> bytes:
    """A status line and header lines of about ``length`` bytes in all, without the blank line that ends a head."""
    pad = b"X-Pad: " + b"a" * 1000 + b"\r\n"
    lines = b"HTTP/1.1 200 OK\r\n" + pad * (length // len(pad))
    return lines + b"X-End: " + b"b" * max(1, length - len(lines) - 9) + b"\r\n"


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"

REFUSED = [
    pytest.param(b"ICY 200 OK\r\n\r\n", "status line", id="not HTTP"),
    pytest.param(b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", "status line", id="HTTP/2.0"),
    pytest.param(b"HTTP/2 200\r\n\r\n", "status line", id="HTTP/2"),
    pytest.param(b"http/1.1 200 OK\r\n\r\n", "status line", id="lower-case HTTP"),
    pytest.param(b"HTTP/1.1 20 OK\r\n\r\n", "status line", id="two-digit status"),
    pytest.param(b"HTTP/1.1 2000 OK\r\n\r\n", "status line", id="four-digit status"),
    pytest.param(b"HTTP/1.1 200 O\x01K\r\n\r\n", "status line", id="control character in reason"),
    # Not informational (RFC 9110 §15 has no status below 100): taken for a 1xx, it would be skipped and the
    # client would read its body as the next head.
    pytest.param(b"HTTP/1.1 099 Odd\r\nContent-Length: 2\r\n\r\nhi", "not an HTTP status", id="status 099"),
    pytest.param(b"HTTP/1.1 000 Zero\r\n\r\n", "not an HTTP status", id="status 000"),
    pytest.param(b"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n", "not a header field", id="header without colon"),
    pytest.param(b"HTTP/1.1 200 OK\r\nX-A : b\r\n\r\n", "not a header field", id="space before colon"),
    pytest.param(b"HTTP/1.1 200 OK\r\n: b\r\n\r\n", "not a header field", id="empty header name"),
    pytest.param(b"HTTP/1.1 200 OK\r\nX-A: b\r\n folded\r\n\r\n", "not a header field", id="obs-fold space"),
    pytest.param(b"HTTP/1.1 200 OK\r\nX-A: b\r\n\tfolded\r\n\r\n", "not a header field", id="obs-fold tab"),
    pytest.param(b"HTTP/1.1 200 OK\r\nX-A: a\x01b\r\n\r\n", "control character", id="control char in value"),
    pytest.param(b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\n\r\n", "control character", id="NUL in value"),
    pytest.param(b"HTTP/1.1 200 OK\r\nX-A: a\x7fb\r\n\r\n", "control character", id="DEL in value"),
    pytest.param(b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\n\r\n", "control character", id="bare CR in value"),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
        "conflicting Content-Length",
        id="conflicting Content-Length headers",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nok", "conflicting Content-Length", id="conflicting list"
    ),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: two\r\n\r\nok", "not a Content-Length", id="CL word"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nok", "not a Content-Length", id="CL negative"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok", "not a Content-Length", id="CL plus sign"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 0x2\r\n\r\nok", "not a Content-Length", id="CL hex"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\nok", "not a Content-Length", id="CL empty"),
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok", "Transfer-Encoding", id="TE gzip"),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        "Transfer-Encoding",
        id="TE gzip, chunked",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        "Transfer-Encoding",
        id="TE gzip then chunked headers",
    ),
    pytest.param(CHUNKED_HEAD + b"zz\r\nok\r\n0\r\n\r\n", "chunk size", id="chunk size not hex"),
    pytest.param(CHUNKED_HEAD + b"0x2\r\nok\r\n0\r\n\r\n", "chunk size", id="chunk size 0x"),
    pytest.param(CHUNKED_HEAD + b" 2\r\nok\r\n0\r\n\r\n", "chunk size", id="chunk size after space"),
    pytest.param(CHUNKED_HEAD + b"\r\nok\r\n0\r\n\r\n", "chunk size", id="empty chunk size line"),
    pytest.param(CHUNKED_HEAD + b"12345678901234567\r\n", "chunk size", id="chunk size of 17 digits"),
    pytest.param(CHUNKED_HEAD + b"2\r\nokXX0\r\n\r\n", "CRLF", id="chunk data without CRLF"),
    pytest.param(CHUNKED_HEAD + b"2\r\nok\r\n0\r\nNoColon\r\n\r\n", "not a header field", id="bad trailer"),
    pytest.param(head_of(MAX_HEAD + 100) + b"Content-Length: 2\r\n\r\nok", "longer than", id="head over MAX_HEAD"),
    # Never ends: the client must give up after MAX_HEAD bytes rather than wait for the rest.
    pytest.param(head_of(MAX_HEAD + 2000), "longer than", id="endless head"),
    pytest.param(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        "switched protocols",
        id="101",
    ),
]


@pytest.mark.parametrize(("answer", "message"), REFUSED)
async def test_answers_that_are_refused(answer: bytes, message: str) -> None:
    async with serve(answering(answer)) as server, open_pool() as pool:
        with pytest.raises(ProtocolViolation, match=message):
            await pool.request(server.origin, GET)
        # A refused answer's connection is closed at once, not kept for the next request.
        await server.peers[0].client_closed.wait()


async def test_a_head_just_under_max_head_is_accepted() -> None:
    response, server = await first_then_ok(head_of(MAX_HEAD - 1000) + b"Content-Length: 2\r\n\r\nok")
    assert (response.status, response.body) == (200, b"ok")
    assert server.connections == 1


# ------------------------------------------------------------------------------------------ framing


async def test_informational_answers_are_skipped() -> None:
    response, server = await first_then_ok(
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </hub/static/a.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX-Final: yes\r\n\r\nbody"
    )
    assert response.status == 200
    assert list(response.headers) == [(b"content-length", b"4"), (b"x-final", b"yes")]  # none from the 1xx heads
    assert response.body == b"body"
    assert server.connections == 1


async def test_a_status_above_599_is_an_ordinary_answer() -> None:
    # RFC 9110 §15: a client treats a status it does not know (600-999 included) as the x00 of its class, or as a
    # server error; reading it is the hub client's business, so the transport passes it on as it came.
    response, server = await first_then_ok(b"HTTP/1.1 999 Custom\r\nContent-Length: 2\r\n\r\nhi")
    assert (response.status, response.body) == (999, b"hi")
    assert server.connections == 1


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", id="204 with Content-Length"),
        pytest.param(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", id="304 with Content-Length"),
        pytest.param(b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", id="304 chunked"),
        pytest.param(b"HTTP/1.1 204 No Content\r\n\r\n", id="204 without framing"),
    ],
)
async def test_204_and_304_have_no_body(answer: bytes) -> None:
    response, server = await first_then_ok(answer)
    assert response.body == b""
    # Had the client waited for 5 bytes of body, the second request would hang; had it read the next answer as
    # this one's body, the second would fail. It did neither, and kept the connection.
    assert server.connections == 1


async def test_an_answer_to_head_has_no_body() -> None:
    head_request = encode_request(b"HEAD", b"/hub/api/", HOST)
    async with serve(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", OK)) as server, open_pool() as pool:
        response = await pool.request(server.origin, head_request, head_request=True)
        assert (response.status, response.header("Content-Length"), response.body) == (200, "1234", b"")
        assert (await pool.request(server.origin, GET)).body == b"ok"
    assert server.connections == 1


async def test_a_body_delimited_by_the_connections_end() -> None:
    body = b"to the end " * 10_000  # over 100 kB, so several reads
    response, server = await first_then_ok(b"HTTP/1.1 200 OK\r\nX-A: b\r\n\r\n" + body, hang_up=True)
    assert (response.status, list(response.headers), response.body) == (200, [(b"x-a", b"b")], body)
    assert server.connections == 2  # a connection that has ended cannot carry another request


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok", id="two headers"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok", id="a list"),
        pytest.param(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nCONTENT-LENGTH:2 \r\n\r\nok", id="cases and spaces"),
    ],
)
async def test_identical_content_lengths_are_accepted(answer: bytes) -> None:
    response, server = await first_then_ok(answer)
    assert response.body == b"ok"
    assert server.connections == 1


@pytest.mark.parametrize(
    ("answer", "headers"),
    [
        pytest.param(
            b"HTTP/1.1 200 OK\nContent-Length: 2\nX-A: b\n\nok",
            [(b"content-length", b"2"), (b"x-a", b"b")],
            id="bare LF throughout",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\nX-A: b\r\n\nok",
            [(b"content-length", b"2"), (b"x-a", b"b")],
            id="mixed",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n2\nok\r\n0\nX-Trailer: t\n\n",
            [(b"transfer-encoding", b"chunked")],
            id="chunked with bare LF lines",
        ),
    ],
)
async def test_bare_lf_line_ends_are_accepted(answer: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    response, server = await first_then_ok(answer)
    assert (response.status, list(response.headers), response.body) == (200, headers, b"ok")
    assert server.connections == 1


async def test_chunk_extensions_and_trailers_are_read_and_ignored() -> None:
    response, server = await first_then_ok(
        CHUNKED_HEAD + b'2;name=value\r\nok\r\n3 ; a="b;c"\r\n!!!\r\n0;last\r\nX-T1: 1\r\nX-T2: 2\r\n\r\n'
    )
    assert response.body == b"ok!!!"
    assert list(response.headers) == [(b"transfer-encoding", b"chunked")]  # trailers are not merged into headers
    assert server.connections == 1


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", id="HTTP/1.0"),
        # HTTP/1.0 keep-alive is an extension this client does not take up: one connection per answer is safe.
        pytest.param(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", id="1.0 keep-alive"),
        pytest.param(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", id="Connection close"),
        pytest.param(b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, CLOSE\r\nContent-Length: 2\r\n\r\nok", id="list"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
            id="second Connection header",
        ),
        # RFC 9112 §6.3: chunked wins, but an answer framed two ways was meant to mislead someone.
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            id="chunked and Content-Length",
        ),
        # Bytes nobody asked for, in the same write as the answer.
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n", id="bytes after"),
        pytest.param(CHUNKED_HEAD + b"2\r\nok\r\n0\r\n\r\n\r\n", id="CRLF after chunked"),
    ],
)
async def test_answers_whose_connection_is_not_reused(answer: bytes) -> None:
    response, server = await first_then_ok(answer)
    assert (response.status, response.body) == (200, b"ok")
    assert server.connections == 2


# ------------------------------------------------------------------------------------------ broken connections


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        pytest.param([NOTHING, HANG_UP], "without answering", id="closes without answering"),
        pytest.param([HANG_UP], None, id="closes before reading the request"),
        pytest.param([b"HTT", HANG_UP], "mid-answer", id="mid status line"),
        pytest.param([b"HTTP/1.1 200 OK\r\nContent-Len", HANG_UP], "mid-answer", id="mid head"),
        pytest.param([b"HTTP/1.1 100 Continue\r\n\r\n", HANG_UP], "closed the connection", id="after 100 Continue"),
        pytest.param([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", HANG_UP], "mid-answer", id="mid body"),
        pytest.param([CHUNKED_HEAD, HANG_UP], "mid-answer", id="before the first chunk"),
        pytest.param([CHUNKED_HEAD + b"5\r\nhel", HANG_UP], "mid-answer", id="mid chunk"),
        pytest.param([CHUNKED_HEAD + b"5\r\nhello", HANG_UP], "mid-answer", id="before a chunk's CRLF"),
        pytest.param([CHUNKED_HEAD + b"5\r\nhello\r\n", HANG_UP], "mid-answer", id="before the last chunk"),
        pytest.param([CHUNKED_HEAD + b"5\r\nhello\r\n0\r\nX-T: 1\r\n", HANG_UP], "mid-answer", id="mid trailers"),
    ],
)
async def test_a_connection_closed_before_the_answer_is_complete(
    steps: list[bytes | None], message: str | None
) -> None:
    async with serve(answering(*steps)) as server, open_pool() as pool:
        with pytest.raises(ConnectionLost, match=message):
            await pool.request(server.origin, GET)


async def test_a_connection_reset_mid_answer() -> None:
    async def reset_mid_body(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
        peer.reset()

    async with serve(reset_mid_body) as server, open_pool() as pool:
        with pytest.raises(ConnectionLost) as caught:
            await pool.request(server.origin, GET)
    assert caught.value.retryable


async def test_a_port_nobody_listens_on() -> None:
    port = dead_port()
    async with open_pool() as pool:
        with trio.fail_after(HANG_GUARD), pytest.raises(ConnectFailed) as caught:
            await pool.request(Origin("http", "127.0.0.1", port), GET)
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message
    assert "refused" in message.lower()
    assert caught.value.retryable


# ------------------------------------------------------------------------------------------ the pool


async def test_an_idle_connection_the_server_closed_is_replaced() -> None:
    async with serve(answering(OK, HANG_UP, OK)) as server, open_pool() as pool:
        assert (await pool.request(server.origin, GET)).body == b"ok"
        await server.peers[0].closed.wait()  # the server closed the connection while it was idle in the pool
        assert (await pool.request(server.origin, GET)).body == b"ok"
    assert server.connections == 2
    assert len(server.peers[0].requests) == 1  # the second request was not sent into the closed connection


async def test_an_idle_connection_with_unasked_bytes_is_replaced() -> None:
    sent = trio.Event()

    async def answer_then_babble(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await peer.send(OK)
            if peer.index == 0:
                await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nnope!")  # an answer to no request
                sent.set()

    async with serve(answer_then_babble) as server, open_pool() as pool:
        assert (await pool.request(server.origin, GET)).body == b"ok"
        await sent.wait()
        # Had the pool reused the connection, this request would have got the unasked answer.
        assert (await pool.request(server.origin, GET)).body == b"ok"
        await server.peers[0].client_closed.wait()
    assert server.connections == 2
    assert len(server.peers[0].requests) == 1


async def test_a_cancelled_request_closes_its_connection() -> None:
    async def stall_the_first(peer: Peer) -> None:
        while await peer.read_request() is not None:
            if peer.index == 0:
                await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
                await peer.wait_for_eof()  # the rest never comes
                return
            await peer.send(OK)

    async with serve(stall_the_first) as server, open_pool() as pool:
        with trio.move_on_after(0.1) as scope:
            await pool.request(server.origin, GET)
        assert scope.cancelled_caught
        # Half an answer is never reused: the interrupted connection is closed, not returned to the pool.
        await server.peers[0].client_closed.wait()
        assert (await pool.request(server.origin, GET)).body == b"ok"
    assert server.connections == 2


async def test_concurrent_requests_each_take_a_connection_and_keep_it() -> None:
    responses: list[RawResponse] = []

    async def fetch(pool: ConnectionPool, origin: Origin) -> None:
        responses.append(await pool.request(origin, GET))

    async with serve(always(OK)) as server, open_pool() as pool:
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(fetch, pool, server.origin)
        assert server.connections == 3
        for _ in range(3):
            await fetch(pool, server.origin)
    assert [response.body for response in responses] == [b"ok"] * 6
    assert server.connections == 3  # the idle ones were reused


async def test_aclose_closes_idle_connections() -> None:
    async with serve(always(OK)) as server:
        pool = ConnectionPool()
        for _ in range(2):
            assert (await pool.request(server.origin, GET)).body == b"ok"
        assert server.connections == 1
        assert not server.peers[0].client_closed.is_set()  # idle in the pool, open
        await pool.aclose()
        await server.peers[0].client_closed.wait()


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
        open_pool(client_context) as pool,
    ):
        for _ in range(3):
            assert (await pool.request(server.origin, GET)).body == b"ok"
    assert server.connections == 1


async def test_over_tls_an_idle_connection_the_server_closed_is_replaced() -> None:
    server_context, client_context = tls_contexts()
    async with (
        serve(answering(OK, HANG_UP, OK), ssl_context=server_context) as server,
        open_pool(client_context) as pool,
    ):
        assert (await pool.request(server.origin, GET)).body == b"ok"
        await server.peers[0].closed.wait()
        assert (await pool.request(server.origin, GET)).body == b"ok"
    assert server.connections == 2
    assert len(server.peers[0].requests) == 1


async def test_over_tls_a_body_delimited_by_the_connections_end_without_close_notify() -> None:
    server_context, client_context = tls_contexts()

    async def answer_and_drop(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\n\r\nto the end")
        # No TLS close-notify, only a TCP FIN: what many HTTPS servers do, and what HTTPS clients take for the end.
        await trio.aclose_forcefully(peer.stream)

    async with serve(answer_and_drop, ssl_context=server_context) as server, open_pool(client_context) as pool:
        response = await pool.request(server.origin, GET)
    assert response.body == b"to the end"


# ------------------------------------------------------------------------------------------ TLS, hidden bytes


@pytest.mark.skipif(not hasattr(socket, "TCP_CORK"), reason="needs Linux's TCP_CORK to put two records in one read")
async def test_over_tls_unasked_bytes_in_a_later_record_are_not_taken_for_the_next_answer() -> None:
    server_context, client_context = tls_contexts()

    async def answer_then_babble_in_the_same_segment(peer: Peer) -> None:
        while await peer.read_request() is not None:
            if peer.index == 0 and len(peer.requests) == 1:
                # Two TLS records (one per send) in one TCP segment: the client's first read takes in both.
                with peer.corked():
                    await peer.send(OK)
                    await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nnope!")  # an answer to no request
            else:
                await peer.send(OK)

    async with (
        serve(answer_then_babble_in_the_same_segment, ssl_context=server_context) as server,
        open_pool(client_context) as pool,
    ):
        assert (await pool.request(server.origin, GET)).body == b"ok"
        # As over plain TCP (test_answers_whose_connection_is_not_reused[bytes after]), the second request should
        # go over a new connection and get its own answer.
        assert (await pool.request(server.origin, GET)).body == b"ok"
    assert server.connections == 2


# ------------------------------------------------------------------------------------------ readiness check


@pytest.mark.parametrize("with_poll", [True, False], ids=["poll", "select (no poll, as on Windows)"])
def test_readable_now_sees_bytes_and_eof_but_not_silence(monkeypatch: pytest.MonkeyPatch, with_poll: bool) -> None:
    if not with_poll:
        monkeypatch.delattr(select, "poll")
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.setblocking(False)
        assert not _readable_now(ours), "a silent peer: the connection is fresh"
        theirs.send(b"x")
        assert _readable_now(ours), "bytes nobody asked for"
        ours.recv(1)
        theirs.shutdown(socket.SHUT_WR)
        assert _readable_now(ours), "the peer closed it"
