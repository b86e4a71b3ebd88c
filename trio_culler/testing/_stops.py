"""Stopping servers and deleting users, as JupyterHub does.

A stop slower than ``slow_stop_timeout`` answers 202 and finishes later, in a background nursery when one is
given (else inline: the request waits the whole latency, then answers 202 if that exceeded the timeout). A stop
is never undone: if its task is cancelled (a client's timeout on the inline path, the hub shut down) the server
is marked stopped at once. Deleting a user answers 400 while any of their servers is active, where JupyterHub
would first stop a running default server itself: a culler must stop every server first, and this catches one
that does not.
"""

from __future__ import annotations

from collections.abc import MutableMapping

import attrs
import httpx
import trio

from ._render import error
from ._routes import INVALID_JSON, Route, json_body
from ._state import FakeServer, FakeUser
from ._statistics import RequestLog

__all__ = ["Stops"]


@attrs.define
class _Stop:
    done: trio.Event = attrs.Factory(trio.Event)
    remove: bool = False  # a later DELETE with {"remove": true} can still ask for removal


class Stops:
    """The stops in progress of one hub."""

    def __init__(self, log: RequestLog) -> None:
        self._log = log
        self._stops: dict[tuple[str, str], _Stop] = {}

    async def stop_server(
        self,
        user: FakeUser,
        route: Route,
        body: bytes,
        *,
        named_servers: bool,
        latency: float,
        slow_stop_timeout: float,
        background: trio.Nursery | None,
    ) -> httpx.Response:
        """Answer ``DELETE /users/{name}/server`` or ``/servers/{name}``; ``latency``: the hub's default."""
        options = json_body(body)
        if options is INVALID_JSON or (options is not None and not isinstance(options, dict)):
            return error(400, "Invalid JSON in body of request")
        remove = bool(options.get("remove", False)) if isinstance(options, dict) else False
        name = route.server
        if name:
            if not named_servers:
                return error(400, "Named servers are not enabled.")
            if name not in user.servers and name not in user.stopped_named:
                return error(404, f"{user.name} has no server named '{name}'")
        elif remove:
            return error(400, "Cannot delete the default server")
        server = user.servers.get(name)
        if server is None:  # exists, not running: nothing to stop
            if remove:
                user.stopped_named.discard(name)
            return httpx.Response(204)
        key = (user.name, name)
        if server.pending == "stop":
            # JupyterHub answers 202 again, and honours a late request to remove.
            stop = self._stops.get(key)
            if stop is not None and remove:
                stop.remove = True
            return httpx.Response(202)
        server.pending, server.ready = "stop", False
        stop = self._stops[key] = _Stop(remove=remove)
        if server.stop_latency is not None:
            latency = server.stop_latency
        if background is None:
            await self._run_stop(user, server, stop, latency)
            return httpx.Response(202 if latency > slow_stop_timeout else 204)
        background.start_soon(self._run_stop, user, server, stop, latency)
        with trio.move_on_after(slow_stop_timeout):
            await stop.done.wait()
            return httpx.Response(204)
        return httpx.Response(202)  # still stopping; the background task finishes it

    async def _run_stop(self, user: FakeUser, server: FakeServer, stop: _Stop, latency: float) -> None:
        try:
            await trio.sleep(latency)
        finally:
            # Also on cancellation: a stop once begun is not undone (see the module docstring).
            key = (user.name, server.name)
            self._stops.pop(key, None)
            if user.servers.get(server.name) is server:
                del user.servers[server.name]
                server.pending, server.ready = None, False
                if server.name and not stop.remove:
                    user.stopped_named.add(server.name)
            self._log.stops_completed.append(key)
            stop.done.set()

    async def delete_user(
        self, users: MutableMapping[str, FakeUser], user: FakeUser, *, latency: float
    ) -> httpx.Response:
        # Stricter than JupyterHub on purpose: see the module docstring.
        if any(s.pending == "stop" for s in user.servers.values()):
            return error(400, f"{user.name}'s server is in the process of stopping, please wait.")
        if user.servers:
            return error(400, f"{user.name} has active servers")
        await trio.sleep(latency)
        if users.get(user.name) is not user or user.servers:
            return error(400, f"{user.name} changed while being deleted")
        del users[user.name]
        self._log.users_deleted.append(user.name)
        return httpx.Response(204)

    async def wait_done(self) -> None:
        """Wait until no stop is in progress."""
        while self._stops:
            await next(iter(self._stops.values())).done.wait()
