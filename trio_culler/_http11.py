"""A lean HTTP/1.1 client for the culler's hub traffic: a keep-alive pool on trio, with its own message codec.

Why not httpx's default transport: a pass that stops 20,000 servers spends most of its CPU in the HTTP client.
Measured on this project's 2-core machine (``benchmarks/request_cost.py``), one DELETE through the hub client
costs about 680 µs of CPU over httpx and httpcore, and about 36 µs over this module. The culler
needs little of HTTP: no HTTP/2, no streaming, no redirects, no content codings (it asks for ``identity``),
no proxies (``--use-proxy-env`` uses httpx's own client instead). So this module does only that, strictly:

Requests are written by :func:`encode_request` from parts the caller has already validated (a path the hub
client percent-encoded, header values checked once at start-up); it refuses anything that could split a
request. Responses are read by :class:`_Connection` and parsed as RFC 9112 says a client must:

- the head is bounded (:data:`MAX_HEAD`), lines end in CRLF (a bare LF is accepted, as RFC 9112 allows), an
  obsolete line folding or a control character in a header is refused, 1xx answers are skipped (101 refused);
- the body's length comes from ``Transfer-Encoding: chunked`` (any other transfer coding is refused), else from
  ``Content-Length`` (several values must agree), else it runs to the end of the connection; 204 and 304 (and
  answers to HEAD) have none; bodies are bounded (:data:`MAX_BODY`);
- a connection is kept only when the answer was HTTP/1.1, complete, length-delimited, without ``Connection:
  close`` and without stray bytes after it. Any failure or cancellation mid-request closes it: a half-read
  answer is never reused;
- an idle connection is checked before reuse: if the server closed it meanwhile (the socket is readable while no
  answer is due: EOF or stray bytes), it is discarded and another one used.

Plain connections use the socket directly (send, then wait until readable, then receive): that is one pass
through trio's scheduler per request instead of three through ``SocketStream``. TLS goes through
``trio.SSLStream`` with the caller's ``ssl.SSLContext``, which always verifies the certificate.

It imports nothing from httpx; ``_transport`` adapts it to the hub client. Tests: ``tests/test_http11.py``
checks the codec against h11 as the reference server, and every refusal above.
"""

from __future__ import annotations

import re
import select
import socket
import ssl
from collections.abc import Sequence

import attrs
import trio

from ._errors import describe_exception

__all__ = [
    "MAX_BODY",
    "MAX_HEAD",
    "ConnectFailed",
    "ConnectionLost",
    "ConnectionPool",
    "Origin",
    "ProtocolViolation",
    "RawResponse",
    "TransportError",
    "encode_request",
]

#: Most bytes of a response head (status line and headers), and separately of a chunked body's trailers.
MAX_HEAD = 64 * 1024
#: Most bytes of a response body. A page of 200 users is about 100 kB; a pre-2.0 hub that lists 100,000 users
#: in one answer about 50 MB.
MAX_BODY = 512 * 1024 * 1024
#: Most bytes of one chunk-size line (a hex size and extensions we ignore).
_MAX_CHUNK_LINE = 4096
_READ_SIZE = 65536

_HEAD_END = re.compile(rb"\n\r?\n")
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: [^\x00-\x08\x0a-\x1f\x7f]*)?")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\x00-\x08\x0a-\x1f\x7f]*)?")
_TARGET = re.compile(rb"/[\x21-\x7e]*")
_BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})


@attrs.frozen
class Origin:
    scheme: str
    host: str
    port: int


@attrs.frozen
class RawResponse:
    status: int
    #: (name in lower case, value) in the order received.
    headers: Sequence[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), decoded as Latin-1, or None."""
        wanted = name.lower().encode("ascii")
        for key, value in self.headers:
            if key == wanted:
                return value.decode("latin-1")
        return None


class TransportError(Exception):
    """Base of what the transport raises; the message never contains request headers."""

    #: Whether trying again could help (a refused or broken connection: yes; a rejected certificate: no).
    retryable = True


class ConnectFailed(TransportError):
    """No connection (refused, unreachable, TLS handshake or certificate failure)."""


class ConnectionLost(TransportError):
    """The connection broke or was closed before a complete answer."""


class ProtocolViolation(TransportError):
    """The server's bytes are not an HTTP/1.1 answer this client accepts."""


def encode_request(method: bytes, target: bytes, head: bytes, body: bytes = b"") -> bytes:
    """One request's bytes. ``head`` is the header lines (each ending in CRLF) without framing headers; the
    caller built them from values it validated. ``target`` must be an origin-form path without spaces or
    control characters: the hub client percent-encodes every segment, so anything else is a bug, refused here
    rather than sent as a request that could be split."""
    if not _TARGET.fullmatch(target) or not _TOKEN.fullmatch(method):
        raise ValueError(f"refusing to send a malformed request line: {method!r} {target!r}")
    # A request without a body has no framing header, except where its method expects one (RFC 9110 §8.6).
    framing = b"Content-Length: %d\r\n" % len(body) if body or method in _BODY_METHODS else b""
    return b"%s %s HTTP/1.1\r\n%s%s\r\n%s" % (method, target, head, framing, body)


# -- the connection and its I/O ---------------------------------------------------------------------------


class _SocketIO:
    """A plain TCP socket, used directly: trio's SocketStream adds a scheduler round trip to every send and
    receive, which at thousands of requests a second is most of their cost."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    async def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                sent = self.sock.send(view)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self.sock)
                continue
            view = view[sent:]

    async def receive(self, *, expect_wait: bool) -> bytes:
        """Some bytes, or b"" at end of stream. With ``expect_wait`` (the first read after a request: its
        answer cannot be there yet) it waits before trying, which saves a failing system call."""
        if expect_wait:
            await trio.lowlevel.wait_readable(self.sock)
        while True:
            try:
                return self.sock.recv(_READ_SIZE)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self.sock)

    def is_stale(self) -> bool:
        # Readable while no answer is due: EOF (the server closed it) or bytes nobody asked for.
        return _readable_now(self.sock)

    def close(self) -> None:
        # Synchronous, so it cannot be interrupted by a cancellation. trio must forget the socket before its
        # file descriptor can be reused.
        trio.lowlevel.notify_closing(self.sock)
        self.sock.close()


def _readable_now(sock: socket.socket) -> bool:
    """Whether reading ``sock`` would not block. A poll with no timeout is one system call and, unlike a peeking
    recv, raises nothing when all is well; select() where there is no poll() (Windows)."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([sock], [], [], 0)[0])


class _StreamIO:
    """A TLS stream (or any trio stream over a socket)."""

    def __init__(self, stream: trio.SSLStream[trio.SocketStream], tcp: trio.SocketStream) -> None:
        self.stream = stream
        self.tcp = tcp

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def receive(self, *, expect_wait: bool) -> bytes:
        return bytes(await self.stream.receive_some(_READ_SIZE))

    def is_stale(self) -> bool:
        # Bytes nobody asked for may hide inside the TLS layer, not just on the socket: a record that came with
        # the answer's last one is read off the socket but not decrypted. trio keeps those in the SSLStream's
        # incoming buffer, which it does not expose; if that ever changes, TLS connections are not reused
        # rather than trusted blindly.
        incoming = getattr(self.stream, "_incoming", None)
        if not isinstance(incoming, ssl.MemoryBIO):
            return True
        return bool(incoming.pending or self.stream.pending() or self.tcp.socket.is_readable())

    def close(self) -> None:
        # A TLS close-notify is not worth waiting for (the hub does not need it), and waiting could be cancelled.
        self.tcp.socket.close()


_IO = _SocketIO | _StreamIO


class _Connection:
    def __init__(self, io: _IO) -> None:
        self.io = io
        self.buffer = bytearray()
        self.reusable = False
        self._eof = False

    async def round_trip(self, request: bytes, *, head_request: bool = False) -> RawResponse:
        self.reusable = False
        try:
            await self.io.send(request)
            return await self._read_response(head_request)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as error:
            raise ConnectionLost(f"connection lost: {error!r}") from None

    async def _fill(self, *, expect_wait: bool = False) -> bool:
        """Read more into the buffer; False at end of stream."""
        if self._eof:
            return False
        data = await self.io.receive(expect_wait=expect_wait)
        if not data:
            self._eof = True
            return False
        self.buffer += data
        return True

    async def _read_response(self, head_request: bool) -> RawResponse:
        first = True
        while True:
            status, version, headers = await self._read_head(first)
            first = False
            if status < 100:
                # Not informational, not anything: RFC 9110 §15 has no status below 100. (600-999 are kept: the
                # hub client treats them as server errors, as §15 asks.)
                raise ProtocolViolation(f"status {status:03d} is not an HTTP status")
            if status == 101:
                raise ProtocolViolation("the server switched protocols unasked")
            if status >= 200:
                break
            # 1xx (e.g. 100 Continue): informational; the real answer follows.
        keep_alive = version == 1
        connection = _values(headers, b"connection")
        if any(token.strip().lower() == b"close" for value in connection for token in value.split(b",")):
            keep_alive = False
        if head_request or status in (204, 304):
            body = b""
        else:
            transfer_encoding = _values(headers, b"transfer-encoding")
            if transfer_encoding:
                codings = [c.strip().lower() for value in transfer_encoding for c in value.split(b",")]
                if codings != [b"chunked"]:
                    raise ProtocolViolation(f"unsupported Transfer-Encoding {b', '.join(codings)!r:.100}")
                if _values(headers, b"content-length"):
                    # RFC 9112 §6.3: chunked wins, but the message was meant to mislead someone: do not reuse.
                    keep_alive = False
                body = await self._read_chunked()
            else:
                length = _content_length(headers)
                if length is None:
                    body = await self._read_to_end()
                    keep_alive = False
                else:
                    body = await self._read_exactly(length)
        if self.buffer:
            keep_alive = False  # bytes after the answer: nobody asked for them, so something is off
        self.reusable = keep_alive and not self._eof
        return RawResponse(status, headers, body)

    async def _read_head(self, first: bool) -> tuple[int, int, list[tuple[bytes, bytes]]]:
        buffer = self.buffer
        searched = 0
        while True:
            match = _HEAD_END.search(buffer, max(0, searched - 2))
            if match is not None:
                break
            if len(buffer) > MAX_HEAD:
                raise ProtocolViolation(f"the answer's head is longer than {MAX_HEAD} bytes")
            searched = len(buffer)
            if not await self._fill(expect_wait=first and not buffer):
                if buffer:
                    raise ConnectionLost("the server closed the connection mid-answer")
                raise ConnectionLost("the server closed the connection without answering")
        if match.start() > MAX_HEAD:
            raise ProtocolViolation(f"the answer's head is longer than {MAX_HEAD} bytes")
        head = bytes(buffer[: match.start()])
        del buffer[: match.end()]
        lines = head.split(b"\n")
        status_line = _strip_cr(lines[0])
        status_match = _STATUS_LINE.fullmatch(status_line)
        if status_match is None:
            raise ProtocolViolation(f"not an HTTP/1.x status line: {status_line[:80]!r}")
        headers = _parse_fields(lines[1:])
        return int(status_match.group(2)), int(status_match.group(1)), headers

    async def _read_exactly(self, length: int) -> bytes:
        if length > MAX_BODY:
            raise ProtocolViolation(f"the answer's body ({length} bytes) is longer than {MAX_BODY} bytes")
        buffer = self.buffer
        while len(buffer) < length:
            if not await self._fill():
                raise ConnectionLost("the server closed the connection mid-answer")
        body = bytes(buffer[:length])
        del buffer[:length]
        return body

    async def _read_to_end(self) -> bytes:
        while await self._fill():
            if len(self.buffer) > MAX_BODY:
                raise ProtocolViolation(f"the answer's body is longer than {MAX_BODY} bytes")
        body = bytes(self.buffer)
        self.buffer.clear()
        return body

    async def _read_line(self, limit: int) -> bytes:
        buffer = self.buffer
        searched = 0
        while True:
            end = buffer.find(b"\n", searched)
            if end >= 0:
                break
            if len(buffer) > limit:
                raise ProtocolViolation("a line of the chunked body is too long")
            searched = len(buffer)
            if not await self._fill():
                raise ConnectionLost("the server closed the connection mid-answer")
        if end > limit:
            raise ProtocolViolation("a line of the chunked body is too long")
        line = bytes(buffer[:end])
        del buffer[: end + 1]
        return _strip_cr(line)

    async def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = await self._read_line(_MAX_CHUNK_LINE)
            match = _CHUNK_SIZE.fullmatch(line)
            if match is None:
                raise ProtocolViolation(f"not a chunk size: {line[:40]!r}")
            size = int(match.group(1), 16)
            if size == 0:
                break
            total += size
            if total > MAX_BODY:
                raise ProtocolViolation(f"the answer's body is longer than {MAX_BODY} bytes")
            chunks.append(await self._read_exactly(size))
            if await self._read_exactly(2) != b"\r\n":
                raise ProtocolViolation("a chunk does not end with CRLF")
        trailer_bytes = 0
        while True:  # trailer fields: read, checked, ignored
            line = await self._read_line(MAX_HEAD)
            if not line:
                break
            trailer_bytes += len(line)
            if trailer_bytes > MAX_HEAD:
                raise ProtocolViolation(f"the answer's trailers are longer than {MAX_HEAD} bytes")
            _parse_fields([line])
        return b"".join(chunks)

    def is_stale(self) -> bool:
        """An idle keep-alive connection is fresh only if nothing at all is waiting to be read on it."""
        return self.io.is_stale()

    def close(self) -> None:
        self.io.close()


def _strip_cr(line: bytes) -> bytes:
    return line[:-1] if line.endswith(b"\r") else line


def _parse_fields(lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    fields = []
    for raw in lines:
        line = _strip_cr(raw)
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            # Also an obsolete line folding (a line starting with a space), which RFC 9112 lets a client refuse.
            raise ProtocolViolation(f"not a header field: {line[:80]!r}")
        value = value.strip(b" \t")
        if _BAD_VALUE.search(value):
            raise ProtocolViolation(f"a control character in header {name[:40]!r}")
        fields.append((name.lower(), value))
    return fields


def _values(headers: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [value for key, value in headers if key == name]


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    values = {v.strip() for value in _values(headers, b"content-length") for v in value.split(b",")}
    if not values:
        return None
    if len(values) > 1:
        raise ProtocolViolation(f"conflicting Content-Length values {sorted(values)!r:.100}")
    (value,) = values
    if not value.isdigit() or len(value) > 18:
        raise ProtocolViolation(f"not a Content-Length: {value[:40]!r}")
    return int(value)


# -- the pool ---------------------------------------------------------------------------------------------


class ConnectionPool:
    """Keep-alive connections per origin. The number of connections follows the requests in flight, which the
    caller bounds (the hub client's CapacityLimiter); idle ones are kept for reuse."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl_context = ssl_context
        self._idle: dict[Origin, list[_Connection]] = {}
        self._closed = False

    async def request(self, origin: Origin, request: bytes, *, head_request: bool = False) -> RawResponse:
        """Send ``request`` (from :func:`encode_request`) to ``origin``; the complete answer, or
        :class:`TransportError`. A cancellation closes the connection it interrupts."""
        idle = self._idle.get(origin)
        connection = None
        while idle:
            candidate = idle.pop()
            if not candidate.is_stale():
                connection = candidate
                break
            candidate.close()
        if connection is None:
            connection = await self._connect(origin)
        try:
            response = await connection.round_trip(request, head_request=head_request)
        except BaseException:
            connection.close()
            raise
        if connection.reusable and not self._closed:
            self._idle.setdefault(origin, []).append(connection)
        else:
            connection.close()
        return response

    async def _connect(self, origin: Origin) -> _Connection:
        try:
            tcp = await trio.open_tcp_stream(origin.host, origin.port)
        except OSError as error:
            # trio reports every address it tried in an exception group; say what they were (e.g. refused).
            raise ConnectFailed(f"cannot connect to {origin.host}:{origin.port}: {describe_exception(error)}") from None
        if origin.scheme != "https":
            sock = socket.socket(fileno=tcp.socket.detach())
            sock.setblocking(False)
            return _Connection(_SocketIO(sock))
        context = self._ssl_context or ssl.create_default_context()
        # https_compatible: as HTTPS clients do, take a close without TLS close-notify for the end of the stream
        # (an answer delimited by the end of the connection is then read, not lost) and send none ourselves.
        tls = trio.SSLStream(tcp, context, server_hostname=origin.host, https_compatible=True)
        try:
            await tls.do_handshake()
        except trio.BrokenResourceError as error:
            tcp.socket.close()
            cause = error.__cause__ or error
            failed = ConnectFailed(f"TLS with {origin.host}:{origin.port} failed: {cause}")
            # Trying again a second later cannot make the hub's certificate verify.
            failed.retryable = not isinstance(cause, ssl.SSLCertVerificationError)
            raise failed from None
        except BaseException:
            tcp.socket.close()
            raise
        return _Connection(_StreamIO(tls, tcp))

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()
