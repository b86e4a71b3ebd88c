"""Any httpx-style handler on a real loopback socket: listeners, the httpx <-> raw HTTP adapter, and
``open_fake_hub``. It knows nothing of JupyterHub; what it serves is the caller's."""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Protocol

import attrs
import httpx
import trio

from ._h11_server import RawRequest, RawResponse, serve_h11
from ._nursery import open_helper_nursery

__all__ = [
    "CONNECTION_ID",
    "Handler",
    "Loopback",
    "Servable",
    "from_raw_request",
    "open_fake_hub",
    "open_loopback_listeners",
    "serve_loopback",
    "to_raw_response",
]

#: The request extension that carries the number of the loopback connection it arrived on.
CONNECTION_ID = "trio_culler.testing.connection_id"

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


@attrs.frozen
class Loopback:
    listeners: list[trio.abc.Listener[trio.abc.Stream]]
    scheme: str
    api_url: str  # e.g. "http://127.0.0.1:PORT/hub/api"


async def open_loopback_listeners(host: str, port: int, ssl_context: ssl.SSLContext | None) -> Loopback:
    """Listen on a loopback address only; anything else is refused with ValueError."""
    if host == "localhost":
        host = "127.0.0.1"
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"FakeHub only listens on a loopback address, not {host!r}")
    sockets = await trio.open_tcp_listeners(port, host=host)
    bound_port = sockets[0].socket.getsockname()[1]
    listeners: list[trio.abc.Listener[trio.abc.Stream]] = list(sockets)
    scheme = "http"
    if ssl_context is not None:
        scheme = "https"
        listeners = [trio.SSLListener(s, ssl_context, https_compatible=True) for s in sockets]
    url_host = f"[{host}]" if ":" in host else host
    return Loopback(listeners, scheme, f"{scheme}://{url_host}:{bound_port}/hub/api")


def from_raw_request(scheme: str, raw: RawRequest) -> httpx.Request:
    host = next((v for k, v in raw.headers if k.lower() == b"host"), b"localhost")
    url = httpx.URL(f"{scheme}://{host.decode('ascii')}").copy_with(raw_path=raw.target)
    request = httpx.Request(raw.method, url, headers=raw.headers, content=raw.body)
    request.extensions[CONNECTION_ID] = raw.connection_id
    return request


async def to_raw_response(response: httpx.Response) -> RawResponse:
    return RawResponse(response.status_code, list(response.headers.raw), await response.aread())


async def serve_loopback(
    handler: Handler,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl_context: ssl.SSLContext | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``handler`` over HTTP/1.1 on a loopback address until cancelled; ``task_status.started(api_url)``
    once listening (``http://127.0.0.1:PORT/hub/api``). Each request carries its connection's number in
    ``request.extensions[CONNECTION_ID]``."""
    loopback = await open_loopback_listeners(host, port, ssl_context)

    async def app(raw: RawRequest) -> RawResponse:
        return await to_raw_response(await handler(from_raw_request(loopback.scheme, raw)))

    async with trio.open_nursery() as nursery:
        await nursery.start(serve_h11, app, loopback.listeners)
        task_status.started(loopback.api_url)


class Servable(Protocol):
    """Something that serves itself on a loopback address (``FakeHub.serve``)."""

    async def serve(
        self,
        *,
        host: str = ...,
        port: int = ...,
        ssl_context: ssl.SSLContext | None = ...,
        task_status: trio.TaskStatus[str] = ...,
    ) -> None: ...


@asynccontextmanager
async def open_fake_hub(
    hub: Servable, *, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    """Serve ``hub`` on a loopback address for the duration of the block; yields its API URL."""
    async with open_helper_nursery() as nursery:
        api_url: str = await nursery.start(partial(hub.serve, host=host, ssl_context=ssl_context))
        try:
            yield api_url
        finally:
            nursery.cancel_scope.cancel()
