"""The default HTTP transport: an ``httpx.AsyncBaseTransport`` on trio streams, with h11 doing all HTTP/1.1 work.

httpx's own default transport (httpcore on anyio) costs several times more CPU per request (encode/httpx#3215;
``benchmarks/request_cost.py``); a culler that stops 20,000 servers in a pass spends most of its CPU there. This
module is the thin layer httpx's transport interface is made for, modelled on httpcore's h11 connection minus
anyio:

- **h11 reads and writes every byte of HTTP**: framing (Content-Length, chunked, to the connection's end), the
  status line and header syntax, and every refusal; its errors become httpx's ``RemoteProtocolError``. This
  module adds policy only: at most :data:`MAX_INFORMATIONAL` 1xx answers before the final one, no unasked
  protocol switch (101), heads bounded by h11's ``max_incomplete_event_size`` (:data:`MAX_HEAD`), bodies by
  :data:`MAX_BODY`.
- **trio streams through public APIs only**: ``trio.open_tcp_stream``, ``trio.SSLStream`` with one
  ``ssl.SSLContext`` built when the transport is (not per connection). Every read is a ``receive_some``, a
  trio checkpoint even when bytes are waiting, so a server that keeps the socket full cannot starve deadlines
  or signal handlers.
- **A small keep-alive pool per origin.** A connection goes back to the pool only when h11 says both sides are
  ``IDLE`` after ``start_next_cycle()`` and no byte beyond the answer arrived. Before reuse it is checked: a read
  that may not wait (see :meth:`_Connection.is_fresh`) finds whatever the server sent meanwhile, an EOF or
  stray bytes, even inside the TLS layer, and such a connection is dropped. A request that finds its reused
  connection closed before any byte of an answer (the server closed it as we sent) is sent once more on a new
  connection, so an idle timeout on the server never costs a failed request (idempotent methods only: a POST
  that may have been acted on is not sent twice).
- **A request that is cancelled before it starts sends nothing**: :meth:`TrioH11Transport.handle_async_request`
  checks for cancellation before anything else, so such a request neither writes a byte nor costs a pooled
  connection. The hub client counts on it to take a free limiter token without a checkpoint of its own.
- **Cancellation or failure mid-request closes the connection** (synchronously, so it cannot be interrupted):
  half an answer is never reused.
- **A caller can cap one request's answer** below :data:`MAX_BODY` (the request extension
  :data:`MAX_BODY_EXTENSION`, e.g. for a user's server): past the cap, in more pieces than one per 64 bytes
  of the cap (each chunk costs an h11 event), or compressed (whose bytes on the wire say nothing of its size),
  the answer is refused with ``_errors.AnswerTooLarge`` and its connection closed. Any body checkpoints every
  few hundred pieces, so that one read full of tiny chunks does not hold the event loop.

The whole body is read before :meth:`TrioH11Transport.handle_async_request` returns (the culler's answers are
small JSON documents, and a bounded read is simpler to reason about than a stream that outlives the call).
Timeouts are the caller's: wrap the request in a trio cancel scope (the hub client does, per attempt); httpx's
per-read ``timeout`` extension is not used.
"""

from __future__ import annotations

import contextlib
import ssl
from typing import TYPE_CHECKING, Final

import h11
import httpx
import trio

if TYPE_CHECKING:
    # The type of h11.Request.headers: what h11 made of a header list it normalised and validated.
    from h11._headers import Headers as CheckedHeaders

from ._errors import AnswerTooLarge, TLSHandshakeTimeout, describe_exception

__all__ = [
    "MAX_BODY",
    "MAX_BODY_EXTENSION",
    "MAX_HEAD",
    "MAX_IDLE_PER_ORIGIN",
    "MAX_INFORMATIONAL",
    "TrioH11Transport",
    "refuse_encoded",
]

#: Most bytes of a response head (status line and headers), and of a chunked body's trailers (h11's
#: ``max_incomplete_event_size``).
MAX_HEAD: Final = 64 * 1024
#: Most bytes of a response body. A page of 200 users is about 100 kB; a pre-2.0 hub that lists 100,000 users
#: in one answer about 50 MB.
MAX_BODY: Final = 512 * 1024 * 1024
#: The request extension that caps one answer's body (an int, in bytes) below the transport's own limit.
MAX_BODY_EXTENSION: Final = "trio_culler.max_body"
#: Most informational (1xx) answers before the final one. A real server sends one or two (100 Continue, 103
#: Early Hints); a stream of them is a server that will never answer.
MAX_INFORMATIONAL: Final = 8
#: Seconds a TLS handshake may take. On a hub's network it takes milliseconds; a plain-HTTP server that was sent
#: a TLS greeting never answers it, and the request's own deadline (a minute by default) is too long to say so.
HANDSHAKE_TIMEOUT: Final = 5.0
#: Idle connections kept per origin; the hub client sets it to its concurrency.
MAX_IDLE_PER_ORIGIN: Final = 16
_READ_SIZE: Final = 65536
#: Body pieces (h11 Data events: chunks, or what one read brought) read between two checkpoints of their own.
_PIECES_PER_CHECKPOINT: Final = 256
#: Bytes per piece, on average, below which a capped answer is refused: a real server's chunks hold kilobytes,
#: while a body sent a byte per chunk costs an h11 event per byte.
_MIN_PIECE: Final = 64

_Origin = tuple[bytes, bytes, int]
#: Header lists kept in their validated form (see _HeaderCache).
_HEADER_SETS: Final = 64
#: RFC 9110 §9.2.2: what may be sent again after a connection broke without an answer (the server may have acted
#: on the first copy; acting twice must mean the same as once).
_IDEMPOTENT: Final = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
_BOTH_IDLE: Final = {h11.CLIENT: h11.IDLE, h11.SERVER: h11.IDLE}
_DEFAULT_PORTS: Final = {b"http": 80, b"https": 443}


class _NothingReceived(Exception):
    """A reused connection broke before any byte of an answer: the request can go out again on a new one."""


class _Connection:
    def __init__(self, tcp: trio.SocketStream, stream: trio.abc.Stream, *, max_head: int) -> None:
        self.tcp = tcp
        #: ``tcp`` itself, or the TLS stream over it.
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=max_head)
        self.requests = 0
        #: Whether any byte of the current answer arrived; whether the server ended the stream.
        self.received = False
        self.eof = False
        self.response_headers: list[tuple[bytes, bytes]] = []

    async def is_fresh(self) -> bool:
        """Whether nothing at all arrived on this idle connection since its last answer.

        Over plain TCP that is the socket's readiness (bytes or EOF waiting), one system call. Over TLS it is not
        enough: a TLS read may have taken in, with the last answer, a later record it did not decrypt, and
        which no readiness check on the socket can see. There a read that may take what is already there but
        not wait answers: its deadline is set *after* entering the cancel scope, to now, because trio cancels a
        scope entered with a past deadline on the spot, before the read looks at anything, while a deadline
        that passes inside is noticed by the run loop at its next round, which is exactly when the read would
        start to wait. A cancelled read loses no data and leaves the stream usable.
        """
        if any(self.h11.trailing_data):
            return False
        if self.stream is self.tcp:
            return not self.tcp.socket.is_readable()
        with trio.CancelScope() as no_wait:
            no_wait.deadline = trio.current_time()
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self.stream.receive_some(_READ_SIZE)
            return False  # EOF, an error, or bytes nobody asked for
        return True

    async def round_trip(
        self,
        request: httpx.Request,
        body: bytes,
        *,
        max_body: int,
        max_pieces: int | None,
        headers: _HeaderCache,
    ) -> tuple[httpx.Response, bytes]:
        """The answer, unread, and its body."""
        connection = self.h11
        self.requests += 1
        reused = self.requests > 1
        try:
            data = connection.send(
                h11.Request(method=request.method, target=request.url.raw_path, headers=headers.checked(request))
            )
            if body:
                data += connection.send(h11.Data(data=body))
            data += connection.send(h11.EndOfMessage())
        except h11.LocalProtocolError as error:
            # A request h11 will not write (e.g. a header value with a line break): nothing was sent.
            raise httpx.LocalProtocolError(str(error)) from None
        self.received = False
        try:
            await self.stream.send_all(data)
            head = await self._read_head()
            content = await self._read_body(max_body, max_pieces)
        except (_ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as error:
            if reused and not self.received:
                raise _NothingReceived from None
            if isinstance(error, _ConnectionClosed):
                raise httpx.RemoteProtocolError(str(error)) from None
            raise httpx.ReadError(f"connection lost: {error!r}") from None
        # h11's headers are a sequence read item by item: listed once, for httpx and for reusable().
        self.response_headers = list(head.headers)
        whole = bytes(content)
        response = httpx.Response(
            status_code=head.status_code,
            headers=self.response_headers,
            stream=httpx.ByteStream(whole),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": head.reason},
            request=request,
        )
        return response, whole

    async def _read_head(self) -> h11.Response:
        informational = 0
        while True:
            event = await self._next_event()
            if isinstance(event, h11.Response):
                return event
            if not isinstance(event, h11.InformationalResponse):
                raise httpx.RemoteProtocolError(_unexpected(event))
            if event.status_code == 101:
                raise httpx.RemoteProtocolError("the server switched protocols unasked (101)")
            informational += 1
            if informational > MAX_INFORMATIONAL:
                raise httpx.RemoteProtocolError(
                    f"more than {MAX_INFORMATIONAL} informational (1xx) answers to one request"
                )

    async def _read_body(self, max_body: int, max_pieces: int | None) -> bytearray:
        # One growing buffer: a body of a million 1-byte chunks must cost a megabyte, not a million objects.
        content = bytearray()
        pieces = 0
        while True:
            event = await self._next_event()
            if isinstance(event, h11.Data):
                content += event.data
                if len(content) > max_body:
                    raise AnswerTooLarge(f"the answer's body is longer than {max_body} bytes")
                pieces += 1
                if max_pieces is not None and pieces > max_pieces:
                    raise AnswerTooLarge(f"the answer's body came in more than {max_pieces} pieces")
                if pieces % _PIECES_PER_CHECKPOINT == 0:
                    # One read can hold thousands of tiny chunks, each an h11 event: the rest of the program gets
                    # its turn between them, as it does between reads.
                    await trio.lowlevel.checkpoint()
            elif isinstance(event, h11.EndOfMessage):
                return content
            else:
                raise httpx.RemoteProtocolError(_unexpected(event))

    async def _next_event(self) -> h11.Event:
        connection = self.h11
        while True:
            try:
                event = connection.next_event()
            except h11.RemoteProtocolError as error:
                if connection.their_state is h11.ERROR and self.eof:
                    # h11's way of saying the server hung up before the answer was complete.
                    raise _ConnectionClosed(self._closed_message()) from None
                raise httpx.RemoteProtocolError(_h11_message(error)) from None
            if event is h11.NEED_DATA:
                # Every read is a checkpoint, bytes waiting or not: the deadline and signals get their turn.
                data = await self.stream.receive_some(_READ_SIZE)
                self.received = self.received or bool(data)
                self.eof = not data
                connection.receive_data(bytes(data))
                continue
            if isinstance(event, h11.ConnectionClosed):
                raise _ConnectionClosed(self._closed_message())
            # PAUSED comes only after a complete answer, and the reading ends there.
            assert isinstance(event, h11.Event), event
            self.received = True
            return event

    def _closed_message(self) -> str:
        if self.received:
            return "the server closed the connection mid-answer"
        return "the server closed the connection without answering"

    def reusable(self) -> bool:
        """h11 says both sides are done and back to IDLE, and nothing arrived beyond the answer."""
        connection = self.h11
        if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
            return False
        try:
            connection.start_next_cycle()
        except h11.LocalProtocolError:
            return False  # one side must close (Connection: close, HTTP/1.0, a body to the connection's end)
        headers = self.response_headers
        if _has(headers, b"transfer-encoding") and _has(headers, b"content-length"):
            # RFC 9112 §6.3: chunked wins (h11 reads it so), but a message framed two ways was meant to mislead
            # someone on the way: do not trust the connection with another request.
            return False
        return connection.states == _BOTH_IDLE and not any(connection.trailing_data)

    def close(self) -> None:
        # Synchronous, so a cancellation cannot interrupt it; no TLS close-notify (the hub does not need one).
        self.tcp.socket.close()


class _HeaderCache:
    """Request headers as h11 normalised and validated them, by the list httpx gives.

    A pass sends 20,000 requests with the same few headers (the hub's, with the culler's token); h11 validates
    every name and value of every request it is handed as a list, about 4 us a request, and takes the
    validated form of an earlier request as it is. h11 still validates each list the first time it is seen,
    and the method, target and Host of every request. At most :data:`_HEADER_SETS` lists are kept (a
    credential per user's server makes more), all forgotten when full."""

    def __init__(self) -> None:
        self._checked: dict[tuple[tuple[bytes, bytes], ...], CheckedHeaders] = {}

    def checked(self, request: httpx.Request) -> CheckedHeaders:
        """The request's headers in h11's validated form; h11.LocalProtocolError for headers it will not send."""
        raw = request.headers.raw
        key = tuple(raw)
        headers = self._checked.get(key)
        if headers is None:
            headers = h11.Request(method=request.method, target="/", headers=raw).headers
            if len(self._checked) >= _HEADER_SETS:
                self._checked.clear()
            self._checked[key] = headers
        return headers


class _ConnectionClosed(Exception):
    pass


def _has(headers: list[tuple[bytes, bytes]], name: bytes) -> bool:
    return any(key == name for key, _value in headers)


def _unexpected(event: object) -> str:
    return f"unexpected {type(event).__name__} while reading an answer"


def refuse_encoded(response: httpx.Response, max_body: int) -> None:
    """AnswerTooLarge for a compressed answer to a capped request: it could unpack to a thousand times its bytes
    on the wire, past any cap on them (the culler asks for ``Accept-Encoding: identity``)."""
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        raise AnswerTooLarge(f"the answer is compressed ({encoding}) although asked not to be; max {max_body} bytes")


def _h11_message(error: h11.RemoteProtocolError) -> str:
    # h11 quotes the offending bytes; the hub client redacts the token from them before it shows anything.
    return str(error) or type(error).__name__


def _mark_read(response: httpx.Response, body: bytes) -> None:
    """Leave ``response`` as ``response.read()`` leaves an answer whose ``body`` is in memory and not encoded.

    httpx reads even an in-memory body through its decoder and chunker generators and two context managers,
    about 7 us an answer, a few percent of the CPU of a pass that stops 20,000 servers. This sets what that
    read sets; :data:`_READ_IN_PLACE` holds only if, for this httpx, that is exactly what ``read()`` sets."""
    response._content = body
    response._num_bytes_downloaded = len(body)
    response.is_stream_consumed = True
    response.is_closed = True


def _reads_alike() -> bool:
    """Whether :func:`_mark_read` leaves an answer as ``read()`` does, in every attribute but the decoder
    ``read()`` caches, which an answer already read never uses again."""
    request = httpx.Request("GET", "http://127.0.0.1/")

    def answer() -> httpx.Response:
        return httpx.Response(200, headers=[(b"content-type", b"application/json")], stream=httpx.ByteStream(b"{}"))

    read, marked = answer(), answer()
    read.request = marked.request = request
    read.read()
    _mark_read(marked, b"{}")

    def state(response: httpx.Response) -> dict[str, object]:
        return {key: value for key, value in vars(response).items() if key not in ("stream", "_decoder")}

    return state(read) == state(marked) and marked.json() == {} and marked.is_closed


#: Checked once, on import: otherwise every answer is read by ``read()``.
_READ_IN_PLACE: Final = _reads_alike()


class TrioH11Transport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over trio with h11; see the module docstring.

    ``ssl_context`` verifies https origins (default: the system's trust store, built once, on first use).
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_idle_per_origin: int = MAX_IDLE_PER_ORIGIN,
        max_head: int = MAX_HEAD,
        max_body: int = MAX_BODY,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        self._ssl_context = ssl_context
        self._handshake_timeout = handshake_timeout
        self._max_idle = max_idle_per_origin
        self._max_head = max_head
        self._max_body = max_body
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._headers = _HeaderCache()
        self._closed = False
        #: How many connections were opened, for tests and statistics.
        self.connections_opened = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        # Before anything else: a request whose scope is already cancelled sends no byte and leaves the pool as
        # it was. Owned here rather than left to the socket's send, which callers cannot see.
        await trio.lowlevel.checkpoint_if_cancelled()
        url = request.url
        scheme = url.raw_scheme
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"the URL's scheme must be http or https, not {url.scheme!r}")
        origin = (scheme, url.raw_host, url.port or _DEFAULT_PORTS[scheme])
        max_body = self._max_body
        max_pieces = None
        capped = request.extensions.get(MAX_BODY_EXTENSION)
        if capped is not None:
            max_body = min(max_body, capped)
            max_pieces = max(max_body // _MIN_PIECE, 16)
        body = await request.aread()
        for _attempt in range(2):
            connection = await self._checkout(origin)
            try:
                response, content = await connection.round_trip(
                    request, body, max_body=max_body, max_pieces=max_pieces, headers=self._headers
                )
                if capped is not None:
                    refuse_encoded(response, max_body)
            except _NothingReceived:
                connection.close()
                if request.method not in _IDEMPOTENT:
                    raise httpx.RemoteProtocolError("the server closed the connection without answering") from None
                continue  # once, on a new connection: _checkout reuses idle ones only if they are fresh
            except BaseException:
                # A failure, a deadline or a cancellation mid-request: half an answer is never reused.
                connection.close()
                raise
            self._checkin(origin, connection)
            if _READ_IN_PLACE and not _has(connection.response_headers, b"content-encoding"):
                _mark_read(response, content)
            else:
                # httpx's synchronous read decodes a Content-Encoding the server used anyway, as aread would,
                # and closes the response. A DecodingError comes out of here as it would from aread.
                response.read()
            return response
        raise httpx.RemoteProtocolError("the server closed the connection without answering")  # pragma: no cover

    async def _checkout(self, origin: _Origin) -> _Connection:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            try:
                fresh = await connection.is_fresh()
            except BaseException:
                connection.close()
                raise
            if fresh:
                return connection
            connection.close()
        return await self._connect(origin)

    def _checkin(self, origin: _Origin, connection: _Connection) -> None:
        if self._closed or not connection.reusable():
            connection.close()
            return
        idle = self._idle.setdefault(origin, [])
        if len(idle) >= self._max_idle:
            connection.close()
            return
        idle.append(connection)

    async def _connect(self, origin: _Origin) -> _Connection:
        scheme, raw_host, port = origin
        host = raw_host.decode("ascii")
        try:
            tcp = await trio.open_tcp_stream(host, port)
        except OSError as error:
            # trio reports each address it tried in an exception group under the OSError; say what they were.
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {describe_exception(error)}") from error
        self.connections_opened += 1
        if scheme == b"http":
            return _Connection(tcp, tcp, max_head=self._max_head)
        # https_compatible: as HTTPS clients do, take a close without TLS close-notify for the end of the stream
        # (an answer delimited by the end of the connection is then read, not lost) and send none ourselves.
        tls = trio.SSLStream(tcp, self._tls_context(), server_hostname=host, https_compatible=True)
        try:
            with trio.move_on_after(self._handshake_timeout) as handshake:
                await tls.do_handshake()
            if handshake.cancelled_caught:
                raise TLSHandshakeTimeout(f"no TLS handshake with {host}:{port} within {self._handshake_timeout:g} s")
        except trio.BrokenResourceError as error:
            tcp.socket.close()
            cause = error.__cause__ or error
            raise httpx.ConnectError(f"the TLS handshake with {host}:{port} failed: {cause}") from cause
        except BaseException:
            tcp.socket.close()
            raise
        return _Connection(tcp, tls, max_head=self._max_head)

    def _tls_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            # Built once: a context loads the whole trust store, tens of milliseconds of CPU.
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()
