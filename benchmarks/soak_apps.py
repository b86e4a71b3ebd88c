"""The soak harness's own HTTP servers, ASGI apps on hypercorn's trio worker:

- :class:`LightServer`: the single-user server of every user without a process of their own. The hub's routes send
  ``/user/<name>/...`` here through the proxy; it answers as jupyter_server does (``api/status``, ``api/kernels``
  ``[]``), so the proxy records the traffic. For users a fault names, ``api/kernels`` is a hostile answer. With the
  ``notices`` feature it speaks the notice API (docs/notice-api.md); without, it answers 404 there, as a server
  without the extension does. Like jupyter_server, it keeps its own last activity (``api/status``, the notice
  state's ``last_activity``): the driver's requests, never the culler's, which the proxy records all the same.
- :class:`WebhookReceiver`: ``--warn-url``. Takes today's body (``user``, ``server``, ``cull_at``, ...) and one with
  an ``event`` field (``warning``, ``cancelled``, ``culled``) and ``id``.
- :class:`Front`: between the culler and the hub, forwarding with httpx; on the fault schedule it answers 503
  itself (a burst: a share of all requests; a trap: the DELETEs of chosen servers), and it records every DELETE of
  a server with the hub's answer.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote

import httpx
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from soak_timeline import HubDelete, Inspection, NoticeSeen, Timeline, WarningReceived, server_key

__all__ = ["Front", "LightServer", "RaceTrap", "Served", "WebhookReceiver"]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

log = logging.getLogger("soak")
#: The hub's version, which it expects from a single-user server (the hub runs from this same environment).
_HUB_VERSION = importlib.metadata.version("jupyterhub").encode() if importlib.util.find_spec("jupyterhub") else b""
_JSON = [(b"content-type", b"application/json")]
#: Request bodies the apps read at most (the notice API allows 16 KiB).
_MAX_BODY = 64 * 1024
#: Headers that belong to one hop, not to the request or response the front passes on.
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host", "content-length"}


async def _body(receive: Receive, limit: int = _MAX_BODY) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks)


#: What marks an answer as the light server's own (the driver counts only those as its users' activity): every
#: answer of the server, the notice API's included (a keep the driver could not tell from the proxy's error page
#: went unrecorded, and each looked like a cull late by a stretch to the oracle).
_LIGHT = [(b"x-soak-light", b"1"), *_JSON]


async def _answer(send: Send, status: int, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers or _JSON})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _iso(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).isoformat().replace("+00:00", "Z")


def _parse_iso(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _token_digest(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name.lower() == b"authorization":
            _scheme, _, token = value.decode("latin-1").partition(" ")
            return hashlib.sha256(token.strip().encode()).digest()
    return None


def _has_credential(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(name.lower() == b"authorization" for name, _value in headers)


def split_user_path(path: str) -> tuple[str, str, str] | None:
    """``/user/<name>/[<server>/]<rest>`` -> (name, server, rest); None for any other path. No server of the soak
    is named ``api``, so a second segment ``api`` starts the rest of a default server's path."""
    parts = path.split("/")
    if len(parts) < 3 or parts[0] != "" or parts[1] != "user" or not parts[2]:
        return None
    user, rest = unquote(parts[2]), parts[3:]
    server = ""
    if rest and rest[0] not in ("api", ""):
        server, rest = unquote(rest[0]), rest[1:]
    return user, server, "/".join(rest)


class LightServer:
    def __init__(
        self,
        timeline: Timeline,
        *,
        culler_token: str,
        notices: bool,
        hostile_bytes: int,
        hostile_items: int,
        hostile_depth: int,
        drip_seconds: float,
    ) -> None:
        self.timeline = timeline
        self.culler_digest = hashlib.sha256(culler_token.encode()).digest()
        self.notices = notices
        #: key -> hostile kind for api/kernels; set and cleared by the fault runner.
        self.hostile: dict[str, str] = {}
        self.hostile_served: Counter[str] = Counter()
        #: key -> when its last hostile answer was over (sent whole, or abandoned by the culler).
        self.hostile_finished: dict[str, float] = {}
        self.sizes = {"bytes": hostile_bytes, "items": hostile_items, "depth": hostile_depth}
        self.drip_seconds = drip_seconds
        self._bodies: dict[str, bytes] = {}
        self._notice_state: dict[str, dict[str, Any]] = {}
        self.started = time.time()
        #: key -> the server's own last activity (the time of the driver's latest request to it).
        self._activity: dict[str, float] = {}
        #: Called with (key, notice) for each notice the culler delivers (the driver's users may keep).
        self.notice_listeners: list[Callable[[str, dict[str, Any]], None]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        parsed = split_user_path(scope["path"])
        # The hub compares this header with its own version, as it does for jupyter_server.
        headers = [(b"x-soak-light", b"1"), (b"x-jupyterhub-version", _HUB_VERSION), *_JSON]
        if parsed is None:
            await _answer(send, 200, b'{"status": "light"}', headers)
            return
        user, server, rest = parsed
        key = server_key(user, server)
        if not _has_credential(scope["headers"]):
            # The driver's (its users') requests carry no credential to a light server; the culler's always carry
            # one, and jupyter_server would not count them (untracked), so neither does this server.
            self._activity[key] = time.time()
        if rest in ("api/kernels", "api/terminals") and scope["method"] == "GET":
            kind = self.hostile.get(key) if rest == "api/kernels" else None
            from_culler = _token_digest(scope["headers"]) == self.culler_digest
            self.timeline.inspections.append(Inspection(time.time(), key, kind or "normal", from_culler))
            if kind is None:
                await _answer(send, 200, b"[]", headers)
            else:
                self.hostile_served[kind] += 1
                try:
                    await self._hostile(kind, send, headers)
                finally:
                    self.hostile_finished[key] = time.time()
            return
        if rest.startswith("api/trio-culler/"):
            await self._notice_api(scope, receive, send, key, rest.removeprefix("api/trio-culler/v1/"))
            return
        if rest == "api/status":
            status = {"started": _iso(self.started), "last_activity": self.last_activity(key), "connections": 0}
            status["kernels"] = 0
            await _answer(send, 200, json.dumps(status).encode(), headers)
            return
        await _answer(send, 200, b'{"status": "light"}', headers)

    def body(self, kind: str) -> bytes:
        """The hostile answer of ``kind`` (built once: a 64 MiB body is not rebuilt at every inspection)."""
        if kind not in self._bodies:
            if kind == "huge":
                head = b'[{"id":"h","name":"python3","last_activity":"2020-01-01T00:00:00Z","execution_state":"idle",'
                head += b'"connections":0,"pad":"'
                pad = max(0, self.sizes["bytes"] - len(head) - 3)
                self._bodies[kind] = head + b"x" * pad + b'"}]'
            elif kind == "items":
                count = max(1, self.sizes["items"])
                self._bodies[kind] = b"[" + b"{}," * (count - 1) + b"{}]"
            elif kind == "deep":
                depth = max(1, self.sizes["depth"])
                self._bodies[kind] = b"[" * depth + b"]" * depth
            elif kind == "nonjson":
                self._bodies[kind] = b"<html><body>" + b"this is not JSON " * 200 + b"</body></html>"
            else:
                raise ValueError(kind)
        return self._bodies[kind]

    async def _hostile(self, kind: str, send: Send, headers: list[tuple[bytes, bytes]]) -> None:
        if kind != "drip":
            # Declared JSON whatever it is: a server's headers are as hostile as its body.
            await _answer(send, 200, self.body(kind), headers)
            return
        # One byte a second: whitespace (JSON allows it before a value), then an empty list.
        body = b" " * max(0, int(self.drip_seconds) - 2) + b"[]"
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        try:
            for index in range(len(body)):
                await send({"type": "http.response.body", "body": body[index : index + 1], "more_body": True})
                await trio.sleep(1.0)
            await send({"type": "http.response.body", "body": b""})
        except Exception:
            return  # the culler gave up and closed the connection: what a deadline is for

    async def _notice_api(self, scope: Scope, receive: Receive, send: Send, key: str, what: str) -> None:
        method = scope["method"]
        if not self.notices:
            await _answer(send, 404, b'{"message": "Not Found"}', _LIGHT)
            return
        state = self._notice_state.setdefault(key, {"notice": None, "keep": None})
        if what == "notice":
            self.timeline.notices.append(NoticeSeen(time.time(), key, method))
            if method == "PUT":
                try:
                    notice = json.loads(await _body(receive, 16 * 1024))
                except ValueError:
                    await _answer(send, 400, b'{"message": "not JSON"}', _LIGHT)
                    return
                if not isinstance(notice, dict):
                    await _answer(send, 400, b'{"message": "not an object"}', _LIGHT)
                    return
                state["notice"] = notice
                for listener in self.notice_listeners:
                    listener(key, notice)
            elif method == "DELETE":
                wanted = parse_qs(scope["query_string"].decode()).get("id", [None])[0]
                if state["notice"] is not None and state["notice"].get("id") == wanted:
                    state["notice"] = None
                await _answer(send, 204, b"", _LIGHT)
                return
        elif what == "keep" and method == "POST":
            state["keep"] = {"notice_id": (state["notice"] or {}).get("id"), "requested_at": _iso(time.time())}
            state["notice"] = None
        else:
            await _answer(send, 404, b'{"message": "Not Found"}', _LIGHT)
            return
        answer = {**state, "now": _iso(time.time()), "last_activity": self.last_activity(key)}
        await _answer(send, 200, json.dumps(answer).encode(), _LIGHT)

    def last_activity(self, key: str) -> str:
        """What the server says its last activity was: its start, or the driver's latest request since."""
        return _iso(max(self.started, self._activity.get(key, self.started)))

    def notice_of(self, key: str) -> dict[str, Any] | None:
        state = self._notice_state.get(key)
        return None if state is None else state["notice"]


class WebhookReceiver:
    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline
        self.malformed = 0
        self.listeners: list[Callable[[WarningReceived], None]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["method"] != "POST" or scope["path"] != "/warn":
            await _answer(send, 404)
            return
        received = time.time()
        try:
            body = json.loads(await _body(receive))
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("user"), str):
            self.malformed += 1
            await _answer(send, 400, b'{"message": "expected a JSON object with user"}')
            return
        server = body.get("server") or ""
        event = body.get("event")
        warning = WarningReceived(
            received=received,
            key=server_key(body["user"], server if isinstance(server, str) else ""),
            cull_at=_parse_iso(body.get("cull_at")),
            event=event if isinstance(event, str) else None,
            id=str(body["id"]) if body.get("id") is not None else None,
        )
        self.timeline.warnings.append(warning)
        for listener in self.listeners:
            listener(warning)
        await _answer(send, 200, b"{}")


@dataclass
class Burst:
    """A share of the culler's requests answered 503 by the front."""

    probability: float
    retry_after: int | None


@dataclass
class RaceTrap:
    """The DELETEs of ``keys`` are answered 503 (with Retry-After) until each is released; the first one caught
    for a key is announced on ``caught``, so that the driver can restart that server in the meantime."""

    keys: set[str]
    retry_after: int
    caught: trio.MemorySendChannel[str]
    released: set[str] = field(default_factory=set)
    announced: set[str] = field(default_factory=set)
    forwarded: set[str] = field(default_factory=set)
    #: Set once every released key's DELETE went through to the hub.
    all_forwarded: trio.Event = field(default_factory=trio.Event)


def delete_key(path: str) -> str | None:
    """The server a DELETE of ``/hub/api/users/<name>/server[s/<server>]`` stops."""
    parts = path.split("/")
    if len(parts) >= 6 and parts[1:4] == ["hub", "api", "users"]:
        if len(parts) == 6 and parts[5] == "server":
            return server_key(unquote(parts[4]))
        if len(parts) == 7 and parts[5] == "servers":
            return server_key(unquote(parts[4]), unquote(parts[6]))
    return None


class Front:
    def __init__(self, upstream: str, timeline: Timeline, rng: random.Random) -> None:
        self.upstream = upstream.rstrip("/")
        self.timeline = timeline
        self.rng = rng
        self.burst: Burst | None = None
        self.trap: RaceTrap | None = None
        self.client: httpx.AsyncClient | None = None
        self.counts: Counter[str] = Counter()
        self.listeners: list[Callable[[HubDelete], None]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        started = time.time()
        method = scope["method"]
        key = delete_key(scope["path"]) if method == "DELETE" else None
        body = await _body(receive, 16 * 1024 * 1024)
        trap = self.trap
        if key is not None and trap is not None and key in trap.keys and key not in trap.released:
            if key not in trap.announced:
                trap.announced.add(key)
                trap.caught.send_nowait(key)
            await self._refuse(send, started, key, trap.retry_after)
            return
        burst = self.burst
        if burst is not None and self.rng.random() < burst.probability:
            await self._refuse(send, started, key, burst.retry_after)
            return
        if key is not None and trap is not None and key in trap.released:
            trap.forwarded.add(key)
            if trap.forwarded >= trap.keys:
                trap.all_forwarded.set()
        status, headers, content = await self._forward(scope, body)
        self.counts[f"forwarded {method}"] += 1
        if key is not None:
            self._record(HubDelete(key, started, time.time(), status))
        await _answer(send, status, content, headers)

    async def _refuse(self, send: Send, started: float, key: str | None, retry_after: int | None) -> None:
        self.counts["injected 503"] += 1
        headers = [(b"content-type", b"text/plain")]
        if retry_after is not None:
            headers.append((b"retry-after", str(retry_after).encode()))
        if key is not None:
            self._record(HubDelete(key, started, time.time(), 503, injected=True))
        await _answer(send, 503, b"503 Service Unavailable (injected by the soak's front)\n", headers)

    def _record(self, delete: HubDelete) -> None:
        self.timeline.deletes.append(delete)
        for listener in self.listeners:
            listener(delete)

    async def _forward(self, scope: Scope, body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        if self.client is None:
            return 502, [(b"content-type", b"text/plain")], b"front not started\n"
        raw_path = scope.get("raw_path") or scope["path"].encode()
        url = self.upstream + raw_path.decode("latin-1")
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode("latin-1")
        headers = [(n, v) for n, v in scope["headers"] if n.decode("latin-1").lower() not in _HOP]
        try:
            response = await self.client.request(scope["method"], url, headers=headers, content=body)
        except httpx.HTTPError as error:
            self.counts["upstream error"] += 1
            return 502, [(b"content-type", b"text/plain")], f"front: {type(error).__name__}\n".encode()
        drop = _HOP | {"content-encoding"}
        out = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in response.headers.items() if n.lower() not in drop]
        return response.status_code, out, response.content

    def open_client(self) -> httpx.AsyncClient:
        """A new pool for each run of the front: connections to a hub that restarted are dead."""
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(120.0), trust_env=False, follow_redirects=False)
        return self.client


class Served:
    """One app on hypercorn, in the caller's nursery; stopped (listening socket closed) and started again."""

    def __init__(self, app: Any, port: int, name: str) -> None:
        self.app = app
        self.port = port
        self.name = name
        self._shutdown: trio.Event | None = None
        self._done: trio.Event | None = None

    def _config(self) -> HypercornConfig:
        config = HypercornConfig()
        config.bind = [f"127.0.0.1:{self.port}"]
        config.accesslog = None
        config.errorlog = logging.getLogger(f"soak.{self.name}")
        config.graceful_timeout = 1.0
        config.keep_alive_timeout = 75.0
        return config

    async def start(self, nursery: trio.Nursery) -> None:
        self._shutdown = trio.Event()
        self._done = trio.Event()
        await nursery.start(self._run, self._shutdown, self._done)

    async def _run(self, shutdown: trio.Event, done: trio.Event, task_status: trio.TaskStatus[list[str]]) -> None:
        try:
            await serve(self.app, self._config(), shutdown_trigger=shutdown.wait, task_status=task_status)
        finally:
            done.set()

    async def stop(self) -> None:
        if self._shutdown is not None and self._done is not None:
            self._shutdown.set()
            await self._done.wait()
