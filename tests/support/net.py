"""Loopback network faults that an in-memory transport cannot show: real TCP resets, answers that trickle in,
ports nobody listens on, and a forward proxy.

:func:`open_relay` puts a TCP relay in front of a loopback server. For every request that starts on a
connection (the client waits for each answer, so a chunk from the client that begins with a method is the start
of one), ``rule(method, target)`` chooses:

- ``"forward"``: pass the bytes through both ways;
- ``"reset"``: drop the connection with a TCP RST (``SO_LINGER`` 0) before the server sees anything;
- ``"trickle"``: forward the request, then send the answer back one byte every ``trickle_interval`` seconds.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Literal

import attrs
import httpx
import trio

from trio_culler.testing._h11_server import RawRequest, RawResponse, serve_h11

__all__ = ["Relay", "RelayAction", "dead_port", "open_forward_proxy", "open_relay"]

RelayAction = Literal["forward", "reset", "trickle"]
_METHODS = (b"GET ", b"POST ", b"PUT ", b"PATCH ", b"DELETE ", b"HEAD ", b"OPTIONS ")
_CHUNK = 65536


@attrs.define
class Relay:
    upstream_port: int
    rule: Callable[[str, str], RelayAction]
    trickle_interval: float = 0.05
    port: int = 0
    #: (action, method, target, trio.current_time()) for every request seen, in order.
    seen: list[tuple[RelayAction, str, str, float]] = attrs.Factory(list)

    def count(self, action: RelayAction) -> int:
        return sum(1 for entry in self.seen if entry[0] == action)


def dead_port() -> int:
    """A loopback port nobody listens on (bound then released: a connection to it is refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _reset(stream: trio.SocketStream) -> None:
    # Linger 0: close() sends RST instead of FIN, which is what "connection reset by peer" is.
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    stream.socket.close()


async def _relay_connection(relay: Relay, client: trio.SocketStream) -> None:
    mode: list[RelayAction] = ["forward"]  # what to do with the answer now expected
    try:
        upstream = await trio.open_tcp_stream("127.0.0.1", relay.upstream_port)
    except OSError:
        _reset(client)
        return

    async def client_to_upstream(cancel: trio.CancelScope) -> None:
        while True:
            data = await client.receive_some(_CHUNK)
            if not data:
                break
            if data.startswith(_METHODS):
                method_bytes, target_bytes = data.split(b" ", 2)[:2]
                method, target = method_bytes.decode("ascii"), target_bytes.decode("ascii", "replace")
                action = relay.rule(method, target)
                relay.seen.append((action, method, target, trio.current_time()))
                if action == "reset":
                    _reset(client)
                    break
                mode[0] = action
            await upstream.send_all(data)
        cancel.cancel()

    async def upstream_to_client(cancel: trio.CancelScope) -> None:
        while True:
            data = await upstream.receive_some(_CHUNK)
            if not data:
                break
            if mode[0] == "trickle":
                for index in range(len(data)):
                    await client.send_all(data[index : index + 1])
                    await trio.sleep(relay.trickle_interval)
            else:
                await client.send_all(data)
        cancel.cancel()

    async with upstream:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client_to_upstream, nursery.cancel_scope)
                nursery.start_soon(upstream_to_client, nursery.cancel_scope)
        except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # either side went away: so does the relayed connection
    await trio.aclose_forcefully(client)


@asynccontextmanager
async def open_relay(
    upstream_port: int, rule: Callable[[str, str], RelayAction], *, trickle_interval: float = 0.05
) -> AsyncIterator[Relay]:
    """A relay on a free loopback port in front of ``upstream_port``, for the duration of the block."""
    relay = Relay(upstream_port, rule, trickle_interval)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    relay.port = listeners[0].socket.getsockname()[1]

    async def handle(stream: trio.SocketStream) -> None:
        await _relay_connection(relay, stream)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(trio.serve_listeners, handle, listeners))
        try:
            yield relay
        finally:
            nursery.cancel_scope.cancel()


@attrs.define
class ForwardProxy:
    port: int = 0
    #: (method, request target) as the proxy received them: absolute-form for a real proxy client.
    seen: list[tuple[str, str]] = attrs.Factory(list)


@asynccontextmanager
async def open_forward_proxy() -> AsyncIterator[ForwardProxy]:
    """A minimal plain-HTTP forward proxy on loopback: records each request, then makes it itself."""
    proxy = ForwardProxy()
    # The proxy's own client must not use a proxy, or it would call itself.
    async with httpx.AsyncClient(trust_env=False, timeout=10) as upstream:

        async def app(raw: RawRequest) -> RawResponse:
            target = raw.target.decode("ascii")
            proxy.seen.append((raw.method, target))
            if not target.startswith("http://"):
                return RawResponse(400, [], b"a forward proxy expects an absolute URL")
            headers = [(k, v) for k, v in raw.headers if k.lower() not in (b"host", b"proxy-connection")]
            answer = await upstream.request(raw.method, target, headers=headers, content=raw.body)
            return RawResponse(answer.status_code, list(answer.headers.raw), answer.content)

        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        proxy.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_h11, app, list(listeners))
            try:
                yield proxy
            finally:
                nursery.cancel_scope.cancel()
