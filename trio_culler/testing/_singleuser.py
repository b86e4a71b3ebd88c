"""The single-user servers behind FakeHub's fake proxy: what ``--inspect-kernels`` asks them.

FakeHub answers, on the same origin as its API (it plays the proxy too), ``GET /user/<name>/api/kernels`` and
``/api/terminals`` (and ``/user/<name>/<server>/api/...`` for named servers) the way jupyter_server 2.x does:
lists of models with ``last_activity`` and, for kernels, ``execution_state``. What a test can vary:

- each :class:`~trio_culler.testing.FakeServer`'s ``kernels`` and ``terminals`` (:class:`FakeKernel`,
  :class:`FakeTerminal`),
  or ``kernels=None``: a server that is not a jupyter_server (404);
- ``FakeHub.server_latency``: seconds every such request waits before its answer (the benchmark's 50 ms);
- ``FakeHub.server_access``: False makes every server answer 403, as for a token without ``access:servers``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import unquote

import attrs

__all__ = ["FakeKernel", "FakeTerminal", "SingleUserRoute", "kernel_model", "parse_single_user_route", "terminal_model"]


@attrs.define
class FakeKernel:
    id: str
    execution_state: str = "idle"  # "busy" while a cell runs
    last_activity: datetime | None = None
    name: str = "python3"


@attrs.define
class FakeTerminal:
    name: str
    last_activity: datetime | None = None


@attrs.frozen
class SingleUserRoute:
    user: str
    server: str
    endpoint: Literal["kernels", "terminals", "status", "unknown"]


_ENDPOINTS: dict[str, Literal["kernels", "terminals", "status"]] = {
    "kernels": "kernels",
    "terminals": "terminals",
    "status": "status",
}


def parse_single_user_route(raw_path: bytes) -> SingleUserRoute | None:
    """``/user/<name>/[<server>/]api/<endpoint>`` -> the route; None for any other path (the hub's API)."""
    # Like tornado and the proxy: split the encoded path, decode each segment once.
    segments = raw_path.split(b"?", 1)[0].decode("ascii", "replace").split("/")
    if len(segments) < 5 or segments[0] != "" or segments[1] != "user":
        return None
    user = unquote(segments[2])
    rest = segments[3:]
    if len(rest) == 2 and rest[0] == "api":
        server, api = "", rest[1]
    elif len(rest) == 3 and rest[1] == "api":
        server, api = unquote(rest[0]), rest[2]
    else:
        return SingleUserRoute(user, "", "unknown")
    return SingleUserRoute(user, server, _ENDPOINTS.get(api, "unknown"))


def _isoformat(dt: datetime | None) -> str | None:
    # jupyter_server's rendering: ISO 8601 with an explicit +00:00 offset and microseconds.
    return None if dt is None else dt.astimezone(UTC).isoformat()


def kernel_model(kernel: FakeKernel) -> dict[str, Any]:
    return {
        "id": kernel.id,
        "name": kernel.name,
        "last_activity": _isoformat(kernel.last_activity),
        "execution_state": kernel.execution_state,
        "connections": 0,
    }


def terminal_model(terminal: FakeTerminal) -> dict[str, Any]:
    return {"name": terminal.name, "last_activity": _isoformat(terminal.last_activity)}
