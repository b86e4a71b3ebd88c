"""Spawner for the integration-test JupyterHub.

This module is never imported by pytest: ``jupyterhub_config.py`` puts this directory on the hub's
``sys.path`` and names ``hub_spawner.IntegrationSpawner`` as the spawner class, so everything here runs
inside the hub process, on the hub's asyncio event loop.

Four kinds of user, told apart by name, so a test picks the behaviour by choosing a name:

* most users get NO process: ``start()`` returns the URL of one tiny HTTP server shared by all of them
  (started lazily inside the hub process), which answers any request with 200, so the hub's
  "is the server up?" check passes at once.  Hundreds of servers therefore cost the hub only its own
  bookkeeping (database rows, a token, a proxy route), which is what the culler exercises.
* users whose name starts with ``slow`` stop slower than the hub's ``slow_stop_timeout``, so the hub
  answers the culler's ``DELETE .../server`` with 202 (stop still pending).
* users whose name starts with ``real-`` get a real ``jupyterhub-singleuser`` (jupyter_server) process,
  exactly as ``SimpleLocalProcessSpawner`` starts one, so the culler is also tested against servers that
  really start, report to the hub and shut down.
* users whose name starts with ``spy-`` get what a hostile user would run in place of jupyter-server: a
  listener of their own (in the hub process, on a port of its own) that answers ``api/kernels`` and
  ``api/terminals`` with ``[]`` and anything else with ``{}``, and appends every request it receives, head and
  body as received, to ``<hub workdir>/spy-requests.jsonl`` (one JSON object per request: user, method,
  target, headers): whatever the culler sends a server, the test can read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path
from typing import Any

import h11
import jupyterhub
from jupyterhub.spawner import SimpleLocalProcessSpawner

# Longer than the slow_stop_timeout that jupyterhub_config.py sets, so the hub gives up waiting and
# answers 202; the fixture reads the same variables so tests know how long "eventually" is.
SLOW_STOP_SECONDS = float(os.environ.get("TRIO_CULLER_IT_SLOW_STOP_SECONDS", "7"))

_RESPONSE_BODY = b'{"status": "fake single-user server"}'
_RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: application/json\r\n"
    # The hub compares this header with its own version and warns when it is missing.
    + f"X-JupyterHub-Version: {jupyterhub.__version__}\r\n".encode()
    + f"Content-Length: {len(_RESPONSE_BODY)}\r\n".encode()
    # One request per connection keeps the server trivially correct.
    + b"Connection: close\r\n\r\n"
    + _RESPONSE_BODY
)

_shared_server: asyncio.Server | None = None
_shared_server_lock: asyncio.Lock | None = None


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer any HTTP request with 200: the hub only needs a non-5xx reply to call a server up."""
    try:
        # The hub's readiness probe is a body-less GET, so the request ends with its header block.
        await reader.readuntil(b"\r\n\r\n")
        writer.write(_RESPONSE)
        await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def shared_server_url() -> str:
    """URL of the process-wide fake single-user server, starting it on first use."""
    global _shared_server, _shared_server_lock
    if _shared_server_lock is None:
        # Created here, not at import time, so it binds to the hub's running event loop.
        _shared_server_lock = asyncio.Lock()
    async with _shared_server_lock:
        if _shared_server is None:
            # Port 0: the kernel picks a free port; loopback only, like everything in these tests.
            _shared_server = await asyncio.start_server(_answer, host="127.0.0.1", port=0)
    port = _shared_server.sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _spy_log() -> Path:
    return Path(os.environ["TRIO_CULLER_IT_DIR"]) / "spy-requests.jsonl"


async def _spy(user: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Serve one connection of a spy's server: record each request (h11 reads it), answer as jupyter_server's
    kernels and terminals APIs would for a server with none."""
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))  # b"" at the end: h11 then says ConnectionClosed
                continue
            if isinstance(event, h11.ConnectionClosed):
                return
            if not isinstance(event, h11.Request):
                continue
            target = event.target.decode("latin-1")
            record = {
                "user": user,
                "method": event.method.decode("latin-1"),
                "target": target,
                "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in event.headers.raw_items()],
            }
            with _spy_log().open("a") as log:
                log.write(json.dumps(record) + "\n")
            path = target.split("?", 1)[0]
            body = b"[]" if path.endswith(("/api/kernels", "/api/terminals")) else b"{}"
            headers = [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("X-JupyterHub-Version", jupyterhub.__version__),
                ("Connection", "close"),
            ]
            out = conn.send(h11.Response(status_code=200, headers=headers))
            out += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
            writer.write(out)
            await writer.drain()
            return  # one request per connection keeps the listener trivially correct
    except (h11.ProtocolError, ConnectionError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


# jupyterhub ships no type information, so its Spawner is Any to mypy.
class IntegrationSpawner(SimpleLocalProcessSpawner):  # type: ignore[misc]
    """A spawner whose behaviour is chosen by the user's name (see the module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # In-memory only: a fresh hub per test module never restores a fake server from its database.
        self._fake_running = False
        self._spy_server: asyncio.Server | None = None

    @property
    def _is_real(self) -> bool:
        return bool(self.user.name.startswith("real-"))

    async def start(self) -> Any:
        if self._is_real:
            return await super().start()
        if self.user.name.startswith("spy-"):
            name = self.user.name
            self._spy_server = await asyncio.start_server(
                lambda reader, writer: _spy(name, reader, writer), host="127.0.0.1", port=0
            )
            self._fake_running = True
            return f"http://127.0.0.1:{self._spy_server.sockets[0].getsockname()[1]}"
        url = await shared_server_url()
        self._fake_running = True
        return url

    async def poll(self) -> int | None:
        if self._is_real:
            status: int | None = await super().poll()
            return status
        # None means "still running" to the hub; any integer means "exited with this status".
        return None if self._fake_running else 0

    async def stop(self, now: bool = False) -> None:
        if self._is_real:
            await super().stop(now=now)
            return
        if self.user.name.startswith("slow"):
            # The hub waits slow_stop_timeout for this, then answers 202 and lets it finish later.
            await asyncio.sleep(SLOW_STOP_SECONDS)
        if self._spy_server is not None:
            self._spy_server.close()
            self._spy_server = None
        self._fake_running = False
