"""The notice API on FakeHub's single-user servers (docs/notice-api.md), as trio-culler-notice answers it.

A :class:`~trio_culler.testing.FakeServer` runs the extension unless ``notices=False`` (then the API answers 404,
as a server without it does). It holds one notice and one keep, in ``FakeServer.notice`` (the JSON object last
put) and ``FakeServer.keep`` (``{"notice_id": ..., "requested_at": ...}``), which a test may read and set;
:meth:`FakeHub.keep <trio_culler.testing.FakeHub.keep>` is the user clicking "Keep running". Bodies are read as
the extension reads them: a JSON object with exactly the API's keys (400 otherwise; 413 over 16 KiB); the
answers carry the state, with the hub's clock as the server's and ``FakeServer.reported_activity`` as its own
last activity.
"""

from __future__ import annotations

import json
import re
from datetime import datetime

import httpx

from ._render import error, isoformat
from ._routes import SingleUserRoute
from ._state import FakeServer

__all__ = ["NOTICE_KEYS", "notice_answer", "record_keep"]

NOTICE_KEYS = frozenset(
    {"id", "warned_at", "cull_at", "idle_since", "reason", "limit", "limit_seconds", "rule", "activity", "keepable"}
)
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MAX_BODY = 16 * 1024


def _state(server: FakeServer, now: datetime) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "notice": server.notice,
            "keep": server.keep,
            "now": isoformat(now),
            "last_activity": isoformat(server.reported_activity),
        },
        headers={"Cache-Control": "no-store"},
    )


def _object(body: bytes) -> dict[str, object] | httpx.Response:
    if len(body) > _MAX_BODY:
        return error(413, f"body larger than {_MAX_BODY} bytes")
    try:
        value = json.loads(body)
    except ValueError:
        return error(400, "body is not JSON in UTF-8")
    if not isinstance(value, dict):
        return error(400, "body is not a JSON object")
    return value


def record_keep(server: FakeServer, notice_id: str | None, now: datetime) -> None:
    """The user asked to keep the server: the keep is recorded, a notice that can be kept is cleared."""
    server.keep = {"notice_id": notice_id, "requested_at": isoformat(now)}
    if server.notice is not None and server.notice.get("keepable") is True:
        server.notice = None


def notice_answer(
    server: FakeServer, route: SingleUserRoute, request: httpx.Request, body: bytes, now: datetime
) -> httpx.Response:
    """The extension's answer to ``request`` (already let through: the credential reaches the server)."""
    method = request.method
    if route.endpoint == "keep":
        if method != "POST":
            return error(405, "Method Not Allowed")
        value = _object(body)
        if isinstance(value, httpx.Response):
            return value
        notice_id = value.get("notice_id")
        if set(value) != {"notice_id"} or not (notice_id is None or _is_id(notice_id)):
            return error(400, "a keep is {'notice_id': ID or null}")
        record_keep(server, notice_id if isinstance(notice_id, str) else None, now)
        return _state(server, now)
    if method == "GET":
        return _state(server, now)
    if method == "PUT":
        value = _object(body)
        if isinstance(value, httpx.Response):
            return value
        if set(value) != NOTICE_KEYS or not _is_id(value["id"]) or not isinstance(value["keepable"], bool):
            return error(400, "not a notice")
        server.notice = value
        return _state(server, now)
    if method == "DELETE":
        ids = request.url.params.get_list("id")
        if len(ids) != 1 or not _is_id(ids[0]):
            return error(400, "one id=ID in the query, please")
        if server.notice is not None and server.notice.get("id") == ids[0]:
            server.notice = None
        return httpx.Response(204, headers={"Cache-Control": "no-store"})
    return error(405, "Method Not Allowed")


def _is_id(value: object) -> bool:
    return isinstance(value, str) and _ID.fullmatch(value) is not None
