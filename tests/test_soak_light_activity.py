"""The soak's light single-user server keeps its own last activity as jupyter_server does: its users' requests
(the driver's, which carry no credential to it) move it, the culler's (always with a token) never do, and both
``api/status`` and the notice state say it. So the soak exercises the culler's reading of it."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from soak_apps import LightServer, _iso
from soak_timeline import Params, Timeline


async def answer(
    app: LightServer, method: str, path: str, *, token: str | None = None, body: bytes = b""
) -> tuple[int, dict[bytes, bytes], bytes]:
    """The light server's status, headers and body for one request."""
    headers = [(b"authorization", f"token {token}".encode())] if token is not None else []
    scope = {"type": "http", "method": method, "path": path, "query_string": b"", "headers": headers}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    content = b"".join(message.get("body", b"") for message in sent if message["type"] == "http.response.body")
    return sent[0]["status"], dict(sent[0]["headers"]), content


async def ask(app: LightServer, method: str, path: str, *, token: str | None = None) -> tuple[int, Any]:
    status, _headers, content = await answer(app, method, path, token=token)
    return status, json.loads(content) if content else None


def light() -> LightServer:
    params = Params(timeout=30, cull_every=5, activity_interval=10, warn_before=10, long_timeout=60)
    timeline = Timeline(params, started=time.time(), ended=0.0, hub_up_at=0.0)
    options: dict[str, Any] = {"hostile_bytes": 1, "hostile_items": 1, "hostile_depth": 1, "drip_seconds": 1.0}
    return LightServer(timeline, culler_token="culler-token", notices=True, **options)


async def test_the_light_server_reports_its_users_activity_and_not_the_cullers() -> None:
    app = light()
    _status, state = await ask(app, "GET", "/user/ann/api/status")
    used = state["last_activity"]
    assert used >= state["started"]
    await trio.sleep(0.002)  # the server's clock is the wall clock
    for method, path in [
        ("GET", "/user/ann/api/kernels"),
        ("GET", "/user/ann/api/status"),
        ("GET", "/user/ann/api/trio-culler/v1/notice"),
        ("DELETE", "/user/ann/api/trio-culler/v1/notice"),
    ]:
        await ask(app, method, path, token="minted-for-ann")
    status, state = await ask(app, "GET", "/user/ann/api/trio-culler/v1/notice", token="minted-for-ann")
    assert status == 200
    assert state["last_activity"] == used, "the culler's requests are not its user's activity"
    assert (await ask(app, "GET", "/user/ann/api/status", token="culler-token"))[1]["last_activity"] == used
    await trio.sleep(0.002)
    await ask(app, "GET", "/user/ann/api/contents")  # the user again
    later = (await ask(app, "GET", "/user/ann/api/status", token="minted-for-ann"))[1]["last_activity"]
    assert later > used
    assert (await ask(app, "GET", "/user/bob/api/status", token="x"))[1]["last_activity"] == _iso(app.started)


async def test_every_answer_of_the_notice_api_is_marked_as_the_light_servers() -> None:
    """The driver records its users' requests as activity only when the light server answered them (not the
    proxy's error page): a keep answered without the mark went unrecorded, and the oracle saw its server culled a
    whole stretch late."""

    app = light()
    notice = json.dumps({"id": "n1", "cull_at": "2026-12-06T12:00:00Z"}).encode()
    for method, path, body, token in [
        ("PUT", "/user/ann/api/trio-culler/v1/notice", notice, "minted-for-ann"),
        ("GET", "/user/ann/api/trio-culler/v1/notice", b"", "minted-for-ann"),
        ("POST", "/user/ann/api/trio-culler/v1/keep", b'{"notice_id": "n1"}', None),
        ("DELETE", "/user/ann/api/trio-culler/v1/notice", b"", "minted-for-ann"),
        ("GET", "/user/ann/api/trio-culler/v1/nothing", b"", None),
    ]:
        _status, headers, _content = await answer(app, method, path, token=token, body=body)
        assert headers.get(b"x-soak-light") == b"1", (method, path)
