"""A small HTTP/1.1 server on trio streams and h11, used by FakeHub's loopback mode.

It knows nothing about JupyterHub or httpx (``_loopback.py`` adapts both ways): it parses each
request with h11, hands it to an :data:`App` callback and writes back what the callback returns.
Each connection is served by its own task, with keep-alive; requests on one connection are
answered in order. TLS is the caller's business (wrap the listeners in ``trio.SSLListener``).

An :data:`App` that raises closes the connection without an answer: that is how FakeHub's
fault hook simulates a hub that drops a connection.
"""

from __future__ import annotations

import http
import itertools
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import NoReturn

import attrs
import h11
import trio

__all__ = ["App", "RawRequest", "RawResponse", "serve_h11"]

logger = logging.getLogger(__name__)

# h11 buffers at most this much of an incomplete request head; our requests are tiny.
_MAX_HEAD = 64 * 1024
_RECEIVE_SIZE = 64 * 1024
# Framing headers are ours to set: the app's values may not match the body we actually send.
_HOP_BY_HOP = frozenset({b"content-length", b"transfer-encoding", b"connection", b"keep-alive"})
_connection_ids = itertools.count(1)


@attrs.frozen
class RawRequest:
    """One request as it arrived; ``target`` is the raw, still percent-encoded path and query."""

    method: str
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    connection_id: int  # distinct per accepted connection: lets tests see keep-alive reuse


@attrs.frozen
class RawResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


App = Callable[[RawRequest], Awaitable[RawResponse]]


async def serve_h11(
    app: App,
    listeners: list[trio.abc.Listener[trio.abc.Stream]],
    *,
    task_status: trio.TaskStatus[list[trio.abc.Listener[trio.abc.Stream]]] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve ``app`` on ``listeners`` until cancelled; ``task_status.started()`` once accepting."""
    await trio.serve_listeners(partial(_serve_connection, app), listeners, task_status=task_status)


async def _serve_connection(app: App, stream: trio.abc.Stream) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
    connection_id = next(_connection_ids)
    try:
        while True:
            request = await _receive_request(conn, stream, connection_id)
            if request is None:
                return  # the client closed an idle connection
            try:
                response = await app(request)
            except Exception:
                # Deliberate (a fault hook) or not, the client sees a dropped connection.
                logger.debug("dropping connection %d", connection_id, exc_info=True)
                return
            await _send_response(conn, stream, response)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return  # "Connection: close" from either side
            conn.start_next_cycle()
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
        # A client that vanished or spoke bad HTTP (or failed the TLS handshake): just hang up.
        logger.debug("connection %d broken", connection_id, exc_info=True)
    finally:
        await trio.aclose_forcefully(stream)


async def _receive_request(conn: h11.Connection, stream: trio.abc.Stream, connection_id: int) -> RawRequest | None:
    head: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(_RECEIVE_SIZE)))
        elif isinstance(event, h11.ConnectionClosed):
            return None
        elif isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None  # h11 guarantees Request before EndOfMessage
            return RawRequest(
                method=head.method.decode("ascii"),
                target=bytes(head.target),
                headers=[(bytes(k), bytes(v)) for k, v in head.headers.raw_items()],
                body=bytes(body),
                connection_id=connection_id,
            )


async def _send_response(conn: h11.Connection, stream: trio.abc.Stream, response: RawResponse) -> None:
    headers = [(k, v) for k, v in response.headers if k.lower() not in _HOP_BY_HOP]
    body = response.body
    if response.status in (204, 304) or response.status < 200:
        body = b""  # these statuses never carry a body (or a Content-Length)
    else:
        headers.append((b"content-length", str(len(body)).encode("ascii")))
    try:
        reason = http.HTTPStatus(response.status).phrase.encode("ascii")
    except ValueError:
        reason = b""
    out = conn.send(h11.Response(status_code=response.status, headers=headers, reason=reason)) or b""
    if body:  # h11 rejects even an empty Data event for bodiless statuses
        out += conn.send(h11.Data(data=body)) or b""
    out += conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(out)
