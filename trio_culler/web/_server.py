"""Serving the status page: hypercorn's trio worker, in the caller's nursery, listening at once.

JupyterHub waits at its own start-up for a managed service's URL to answer and exits if it does not, while
the culler cannot run a pass before the hub's API answers. So the page listens first (``nursery.start``
returns once the port is bound) and shows "no pass yet" until the first pass publishes its snapshot.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import attrs
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from .._clients import http_client, make_ssl_context
from .._config import Config
from .._history import History
from .._hub import open_hub_client
from ._app import create_app
from ._lookup import HUB_CONCURRENCY, UserLookup
from ._oauth import OAuthFlow
from ._settings import StatusPageSettings
from ._user_view import UserViews

if TYPE_CHECKING:
    import httpx
    from prometheus_client import CollectorRegistry

__all__ = ["serve_status_page"]

log = logging.getLogger("trio_culler.web")

#: A client that sends its request this slowly is dropped (a slow reader only slows its own task).
READ_TIMEOUT = 30
#: The listening socket's backlog (the kernel caps it at net.core.somaxconn).
BACKLOG = 1024


def listen(settings: StatusPageSettings) -> socket.socket:
    """The page's socket, bound here rather than by hypercorn: a port in use is then one plain OSError, and
    no half-made socket is left for the garbage collector."""
    family = socket.AF_INET6 if ":" in settings.bind_host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((settings.bind_host, settings.bind_port))
    except OSError:
        sock.close()
        raise
    return sock


def hypercorn_config(settings: StatusPageSettings, sock: socket.socket | None = None) -> HypercornConfig:
    """hypercorn's settings; with ``sock``, hypercorn takes that socket over: a copy of its file descriptor,
    and ``sock`` itself is closed here (the copy keeps the bound, listening socket open)."""
    server = HypercornConfig()
    if sock is not None:
        descriptor = os.dup(sock.fileno())
        sock.close()
        server.bind = [f"fd://{descriptor}"]
    else:
        host = f"[{settings.bind_host}]" if ":" in settings.bind_host else settings.bind_host
        server.bind = [f"{host}:{settings.bind_port}"]
    # Requests (with their OAuth codes in query strings) are not logged; hypercorn's own errors go to ours.
    server.accesslog = None
    server.errorlog = logging.getLogger("trio_culler.web.server")
    server.include_server_header = False
    server.read_timeout = READ_TIMEOUT
    # Connections the kernel may hold before they are accepted: with hypercorn's 100, a burst of strangers
    # (each of the hub proxy's requests is a new connection) fills it, and an admin's connection then waits
    # for the kernel to retry its SYN, a second and more.
    server.backlog = BACKLOG
    server.graceful_timeout = 1.0
    return server


async def serve_status_page(
    settings: StatusPageSettings,
    config: Config,
    history: History,
    *,
    secret_key: bytes | None = None,
    metrics: CollectorRegistry | None = None,
    read_users: bool = True,
    hub_transport: httpx.AsyncBaseTransport | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; ``await nursery.start(serve_status_page, ...)`` returns the bound URLs.

    ``secret_key`` signs the cookies; by default a new one each start (logins then start again, which the hub
    makes transparent). An embedder that wants logins to survive a restart passes its own 32 random bytes.
    With ``metrics`` (a prometheus-client registry, e.g. ``Metrics().registry``), it is served at
    ``<prefix>metrics`` behind the same check as ``api/status``. ``read_users=False`` (a culler waiting with a
    configuration error, which has no usable hub client) shows users only what the culler remembers.
    ``hub_transport`` replaces the network under that hub client (tests: FakeHub's)."""
    # Its own client, made as every client of the culler's, with the hub's TLS trust (it talks to the hub's
    # OAuth endpoints): the OAuth requests share nothing with the hub client and carry no token header.
    tls = make_ssl_context(config)
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(
            http_client(config, timeout=config.request_timeout, tls=tls, connections=None)
        )
        flow = OAuthFlow(settings, api_url=config.url, client_secret=config.api_token, client=client)
        users = UserViews(None, history, None)
        if read_users:
            # Users' views read their user with the culler's hub client, under a limiter of the page's own.
            hub = await stack.enter_async_context(
                open_hub_client(attrs.evolve(config, concurrency=HUB_CONCURRENCY), transport=hub_transport)
            )
            users = UserViews(config, history, UserLookup(hub))
        app = create_app(
            settings, history, flow, secret_key=secret_key or secrets.token_bytes(32), metrics=metrics, users=users
        )

        # A port in use raises OSError here, before any task: the CLI makes it one line and exit status 2.
        server_config = hypercorn_config(settings, listen(settings))

        async def started(task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
            await serve(app, server_config, task_status=task_status)  # type: ignore[arg-type]

        async with trio.open_nursery() as nursery:
            binds: list[str] = await nursery.start(started)
            log.info("Status page listening on %s, at %s", ", ".join(binds), settings.prefix)
            task_status.started(binds)
