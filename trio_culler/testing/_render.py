"""The fake hub's answers rendered as JupyterHub renders them (user, server and token models, error bodies), and
its single-user servers' as jupyter_server renders them (kernels, terminals)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from ._state import FakeKernel, FakeServer, FakeTerminal, FakeToken, FakeUser

__all__ = ["Json", "error", "kernel_model", "minted_token_model", "terminal_model", "user_model"]

Json = dict[str, Any]


def isoformat(dt: datetime | None) -> str | None:
    """JupyterHub's rendering: UTC, ``Z`` suffix, no fraction when it is zero; naive means UTC."""
    if dt is None:
        return None
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt.isoformat() + "Z"


def _escape(name: str) -> str:
    return quote(name, safe="@~")  # JupyterHub's url_escape_path


def error(status: int, message: str) -> httpx.Response:
    """A JSON error body as JupyterHub's APIHandler writes it."""
    return httpx.Response(status, json={"status": status, "message": message})


def user_model(user: FakeUser, public_url: str | None = None) -> Json:
    default = user.servers.get("")
    return {
        "kind": "user",
        "name": user.name,
        "admin": user.admin,
        "roles": ["admin", "user"] if user.admin else ["user"],
        "groups": [],
        "server": f"/user/{_escape(user.name)}/" if default is not None and default.ready else None,
        "pending": default.pending if default is not None else None,
        "created": isoformat(user.created),
        "last_activity": isoformat(user.last_activity),
        "auth_state": None,
        "servers": {name: _server_model(user, s, public_url) for name, s in user.servers.items()},
    }


def _server_model(user: FakeUser, server: FakeServer, public_url: str | None) -> Json:
    base = f"/user/{_escape(user.name)}/"
    url = f"{base}{_escape(server.name)}/" if server.name else base
    api = f"/hub/api/users/{_escape(user.name)}"
    return {
        "name": server.name,
        "full_name": f"{user.name}/{server.name}",
        "last_activity": isoformat(server.last_activity),
        "started": isoformat(server.started),
        "pending": server.pending,
        "ready": server.ready,
        "stopped": False,  # only active servers are listed
        "url": url,
        "user_options": {},
        "progress_url": (f"{api}/servers/{_escape(server.name)}/progress" if server.name else f"{api}/server/progress"),
        # Only a hub with a public_url knows its servers' full URLs.
        "full_url": None if public_url is None else public_url.rstrip("/") + url,
        "full_progress_url": None,
    }


def minted_token_model(token: FakeToken, *, with_secret: bool) -> Json:
    """A token as JupyterHub's ``token_model`` renders it; the secret only in the answer to the mint."""
    model: Json = {
        "user": token.user,
        "id": token.id,
        "kind": "api_token",
        "roles": [],
        "scopes": sorted(token.scopes),
        "created": isoformat(token.created),
        "last_activity": None,
        "expires_at": isoformat(token.expires_at),
        "note": token.note,
        "session_id": None,
        "oauth_client": "JupyterHub",
    }
    if with_secret:
        model["token"] = token.token
    return model


def _server_isoformat(dt: datetime | None) -> str | None:
    # jupyter_server's rendering: ISO 8601 with an explicit +00:00 offset and microseconds.
    return None if dt is None else dt.astimezone(UTC).isoformat()


def kernel_model(kernel: FakeKernel) -> Json:
    return {
        "id": kernel.id,
        "name": kernel.name,
        "last_activity": _server_isoformat(kernel.last_activity),
        "execution_state": kernel.execution_state,
        "connections": 0,
    }


def terminal_model(terminal: FakeTerminal) -> Json:
    return {"name": terminal.name, "last_activity": _server_isoformat(terminal.last_activity)}
