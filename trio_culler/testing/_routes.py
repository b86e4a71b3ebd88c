"""Where a request goes, as JupyterHub's routing (and the proxy in front of it) sees it: an endpoint of the hub's
REST API, or a single-user server behind the proxy; and what kind of request it is, for the statistics."""

from __future__ import annotations

import json
from typing import Literal, get_args
from urllib.parse import unquote

import attrs
import httpx

__all__ = [
    "INVALID_JSON",
    "ROUTE_KINDS",
    "RequestKind",
    "Route",
    "SingleUserRoute",
    "json_body",
    "parse_route",
    "parse_single_user_route",
    "request_kind",
]

RequestKind = Literal[
    "version",
    "whoami",
    "list",
    "stop",
    "remove",
    "delete_user",
    "mint",
    "revoke",
    "kernels",
    "terminals",
    "notice",
    "other",
]
ROUTE_KINDS: tuple[RequestKind, ...] = get_args(RequestKind)


@attrs.frozen
class Route:
    endpoint: Literal["version", "self", "users", "user", "server", "tokens", "token", "unknown"]
    user: str = ""
    #: The server's name (``server``), or the token's id (``token``).
    server: str = ""
    named: bool = False  # reached through /servers/{name}, not /server


@attrs.frozen
class SingleUserRoute:
    user: str
    server: str
    endpoint: Literal["kernels", "terminals", "status", "notice", "keep", "unknown"]


def _segments(raw_path: bytes) -> list[str]:
    # Split the *encoded* path and decode each segment once, as tornado's routing (and the proxy) does, so
    # "%2F" stays inside a name and "%2525" names a user called "%25".
    return raw_path.split(b"?", 1)[0].decode("ascii", "replace").split("/")


def parse_route(raw_path: bytes) -> Route:
    segments = _segments(raw_path)
    for i in range(len(segments) - 1):
        if segments[i] == "hub" and segments[i + 1] == "api":
            rest = [unquote(s) for s in segments[i + 2 :]]
            break
    else:
        return Route("unknown")
    if rest in ([], [""]):
        return Route("version")
    if rest in (["user"], ["user", ""]):
        return Route("self")
    if rest[0] != "users":
        return Route("unknown")
    if rest[1:] in ([], [""]):
        return Route("users")
    user = rest[1]
    if not user:
        return Route("unknown")
    if len(rest) == 2:
        return Route("user", user)
    if len(rest) == 3 and rest[2] == "server":
        return Route("server", user)
    if len(rest) == 4 and rest[2] == "servers":
        # "/servers/" with an empty name is the default server, as in JupyterHub's route
        return Route("server", user, rest[3], named=True)
    if len(rest) == 3 and rest[2] == "tokens":
        return Route("tokens", user)
    if len(rest) == 4 and rest[2] == "tokens" and rest[3]:
        return Route("token", user, rest[3])
    return Route("unknown")


_SINGLE_USER_ENDPOINTS: dict[str, Literal["kernels", "terminals", "status"]] = {
    "kernels": "kernels",
    "terminals": "terminals",
    "status": "status",
}


#: The notice API of trio-culler-notice, below ``api/``.
_NOTICE_API = ["trio-culler", "v1"]


def parse_single_user_route(raw_path: bytes) -> SingleUserRoute | None:
    """``/user/<name>/[<server>/]api/<endpoint>`` (and ``api/trio-culler/v1/notice`` or ``keep``) -> the route;
    None for any other path (the hub's API)."""
    segments = _segments(raw_path)
    if len(segments) < 5 or segments[0] != "" or segments[1] != "user":
        return None
    user = unquote(segments[2])
    rest = segments[3:]
    for server_segments in (0, 1):
        tail = rest[server_segments:]
        if len(tail) == 4 and tail[0] == "api" and tail[1:3] == _NOTICE_API and tail[3] in ("notice", "keep"):
            server = unquote(rest[0]) if server_segments else ""
            return SingleUserRoute(user, server, "notice" if tail[3] == "notice" else "keep")
    if len(rest) == 2 and rest[0] == "api":
        server, api = "", rest[1]
    elif len(rest) == 3 and rest[1] == "api":
        server, api = unquote(rest[0]), rest[2]
    else:
        return SingleUserRoute(user, "", "unknown")
    return SingleUserRoute(user, server, _SINGLE_USER_ENDPOINTS.get(api, "unknown"))


#: What a request to each endpoint is, by method (a DELETE of a server is a stop or a removal, by its body).
_KINDS: dict[tuple[str, str], RequestKind] = {
    ("version", "GET"): "version",
    ("self", "GET"): "whoami",
    ("users", "GET"): "list",
    ("user", "DELETE"): "delete_user",
    ("tokens", "POST"): "mint",
    ("token", "DELETE"): "revoke",
}


def request_kind(request: httpx.Request, route: Route, body: bytes) -> RequestKind:
    if route.endpoint == "server" and request.method == "DELETE":
        options = json_body(body)
        return "remove" if isinstance(options, dict) and options.get("remove") else "stop"
    return _KINDS.get((route.endpoint, request.method), "other")


INVALID_JSON = object()


def json_body(body: bytes) -> object:
    """The parsed JSON body, None when empty, ``INVALID_JSON`` when it is not JSON."""
    if not body.strip():
        return None
    try:
        return json.loads(body.decode("utf-8", "replace"))
    except ValueError:
        return INVALID_JSON
