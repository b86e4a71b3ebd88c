"""Which endpoint a request reached, and what kind of request it was, as JupyterHub's routing sees it."""

from __future__ import annotations

import json
from typing import Literal
from urllib.parse import unquote

import attrs
import httpx

__all__ = ["INVALID_JSON", "ROUTE_KINDS", "RequestKind", "Route", "json_body", "parse_route", "request_kind"]

RequestKind = Literal["version", "whoami", "list", "stop", "remove", "delete_user", "kernels", "terminals", "other"]
ROUTE_KINDS: tuple[RequestKind, ...] = (
    "version",
    "whoami",
    "list",
    "stop",
    "remove",
    "delete_user",
    "kernels",
    "terminals",
    "other",
)


@attrs.frozen
class Route:
    endpoint: Literal["version", "self", "users", "user", "server", "unknown"]
    user: str = ""
    server: str = ""
    named: bool = False  # reached through /servers/{name}, not /server


def parse_route(raw_path: bytes) -> Route:
    # Split the *encoded* path and decode each segment once, as tornado's routing does, so
    # "%2F" stays inside a name and "%2525" names a user called "%25".
    segments = raw_path.split(b"?", 1)[0].decode("ascii", "replace").split("/")
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
    return Route("unknown")


def request_kind(request: httpx.Request, route: Route, body: bytes) -> RequestKind:
    method = request.method
    if route.endpoint == "version" and method == "GET":
        return "version"
    if route.endpoint == "self" and method == "GET":
        return "whoami"
    if route.endpoint == "users" and method == "GET":
        return "list"
    if route.endpoint == "user" and method == "DELETE":
        return "delete_user"
    if route.endpoint == "server" and method == "DELETE":
        options = json_body(body)
        return "remove" if isinstance(options, dict) and options.get("remove") else "stop"
    return "other"


INVALID_JSON = object()


def json_body(body: bytes) -> object:
    """The parsed JSON body, None when empty, ``INVALID_JSON`` when it is not JSON."""
    if not body.strip():
        return None
    try:
        return json.loads(body.decode("utf-8", "replace"))
    except ValueError:
        return INVALID_JSON
