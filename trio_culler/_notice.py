"""The culler's side of the notice API (docs/notice-api.md): a warning delivered to the warned server itself
(``PUT notice``), withdrawn when it is cancelled (``DELETE notice?id=``), and the server's state read back
before the cull (``GET notice``), for a keep its user asked for and the server's own last activity.

::

    NoticeClient.put(user, server, notice)      -> None, or NoticeFailed
    NoticeClient.withdraw(user, server, id)     -> None, or NoticeFailed
    NoticeClient.read_keep(user, server)        -> the server's ServerState (its last keep, its own last
                                                   activity), or NoticeFailed

**No body before the extension answered.** configurable-http-proxy counts a request as its route's activity when
the answer is below 300 *or the request has a body*: a ``PUT`` to a server without the extension, answered 404,
would still move that server's activity. So :meth:`NoticeClient.put` asks ``GET notice`` first (bodyless: a 404
to it is not activity) and sends the notice only where that answered; a 404 is ``no_extension``, which the
warnings remember for the server's start and never ask again. One more request per warning (one per idle
stretch of a server) is cheaper than remembering, for every server, whether it answered.

A single-user server runs its user's code. Every request goes through the hub client's request engine (its
limiter, the short deadline of requests outside the hub's API, no retry after a timeout, no ``Retry-After``
honoured) with the credential the hub minted for that server's own user (``_credentials``), never the
culler's token; what the server answers is read as hostile input: at most :data:`MAX_ANSWER_BYTES`, one JSON
object, the keep's fields checked by type before use, and the first thing wrong ends the reading
(``unreadable``). The failures have kinds (:data:`FAILURE_KINDS`), so that the culler counts them and logs each
kind once per pass; ``no_extension`` (404: the server does not run trio-culler-notice) is only counted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Final

import attrs

from ._config import Config
from ._credentials import CredentialUnavailable, ServerCredentials
from ._errors import HubError, HubStatusError, HubTimeout, HubUnavailable, caused_by
from ._hub import HubClient
from ._inspect import reported_time, server_base_url
from ._models import Server
from ._records import record_json
from ._time import as_number

__all__ = [
    "API_PATH",
    "FAILURE_KINDS",
    "MAX_ANSWER_BYTES",
    "Keep",
    "Notice",
    "NoticeClient",
    "NoticeFailed",
    "ReadKeep",
    "ServerState",
    "parse_server_state",
    "parse_state",
]

#: Below the server's base URL.
API_PATH: Final = "api/trio-culler/v1/"
#: Most bytes read of an answer: the state is the notice the culler sent (at most 16 KiB, the extension's own
#: bound on a body), a keep and a time.
MAX_ANSWER_BYTES: Final = 32 * 1024
#: Why a notice could not be delivered, or a state read: ``no_extension`` (404), ``forbidden`` (401, 403, a
#: redirect: the server did not take its user's token), ``timeout``, ``unreachable`` (nothing serves there),
#: ``status`` (any other answer), ``unreadable`` (an answer that is not the API's), ``credential`` (no token of
#: the server's user could be had), ``no_url`` (no address for the server).
FAILURE_KINDS: Final = (
    "no_extension",
    "forbidden",
    "timeout",
    "unreachable",
    "status",
    "unreadable",
    "credential",
    "no_url",
)
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MAX_TIME_TEXT = 40
#: What the proxy or the hub answer when nothing serves behind a route (as for inspection).
_NOT_SERVING = frozenset({424, 502, 503})
#: Every status is this module's to judge, except 429 and 5xx, which the engine retries first.
_ANY_STATUS = frozenset(status for status in range(100, 600) if status != 429)
_JSON = (("Content-Type", "application/json"),)


class NoticeFailed(Exception):
    """A notice not delivered, or a state not read; ``kind`` is one of :data:`FAILURE_KINDS`."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@attrs.frozen(kw_only=True)
class Notice:
    """The body of ``PUT notice``: one warning, in the API's words."""

    id: str
    warned_at: datetime
    cull_at: datetime
    #: Since when the server counts as idle; None for a cull that is not for idleness (max-age).
    idle_since: datetime | None
    reason: str
    limit: str
    limit_seconds: float
    rule: str | None
    activity: str
    keepable: bool

    def body(self) -> bytes:
        # Every field, in order (``|`` keeps each key where it is), the limit never negative, the words bounded.
        bounded = {"limit_seconds": as_number(max(0.0, self.limit_seconds)), "activity": self.activity[:500]}
        return json.dumps(record_json(self) | bounded).encode()


@attrs.frozen
class Keep:
    """The last keep the server's user asked for: the id of the notice the page showed (None: none), and when
    the keep arrived, by the server's clock."""

    notice_id: str | None
    requested_at: datetime


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number")


@attrs.frozen
class ServerState:
    """What the culler reads of a server's state: its user's last keep (None: none), and the server's own last
    activity (jupyter_server's, which the culler's requests never move; None when the answer has none that can be
    read: ``activity_unread``, counted and never acted on)."""

    keep: Keep | None
    last_activity: datetime | None = None
    activity_unread: bool = False


def parse_server_state(body: bytes) -> ServerState:
    """``GET notice``'s answer -> the keep and the server's own last activity, or NoticeFailed(``unreadable``)
    when the keep cannot be read. A ``last_activity`` missing (an extension older than it) or unreadable only
    leaves it unread: the keep still counts. The rest (the notice, the server's clock) is not needed."""
    state = _state_object(body)
    moment = reported_time(state.get("last_activity"))
    return ServerState(_keep_of(state), moment, activity_unread=moment is None)


def parse_state(body: bytes) -> Keep | None:
    """``GET notice``'s answer -> the keep it holds (None: none), or NoticeFailed(``unreadable``). Only the keep
    is read here; the server's own last activity is :func:`parse_server_state`'s, the rest not needed."""
    return _keep_of(_state_object(body))


def _state_object(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_ANSWER_BYTES:
        raise NoticeFailed("unreadable", f"GET notice: the answer is longer than {MAX_ANSWER_BYTES} bytes")
    try:
        state = json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise NoticeFailed("unreadable", "GET notice: the answer is not JSON") from None
    if type(state) is not dict:
        raise NoticeFailed("unreadable", "GET notice: the answer is not a JSON object")
    return state


def _keep_of(state: dict[str, Any]) -> Keep | None:
    if "keep" not in state:
        raise NoticeFailed("unreadable", "GET notice: the answer has no 'keep'")
    keep = state["keep"]
    if keep is None:
        return None
    if type(keep) is not dict or set(keep) != {"notice_id", "requested_at"}:
        raise NoticeFailed("unreadable", "GET notice: 'keep' is not an object of notice_id and requested_at")
    notice_id, requested_at = keep["notice_id"], keep["requested_at"]
    if notice_id is not None and (type(notice_id) is not str or _ID.fullmatch(notice_id) is None):
        raise NoticeFailed("unreadable", "GET notice: keep.notice_id is not an id")
    if type(requested_at) is not str or len(requested_at) > _MAX_TIME_TEXT:
        raise NoticeFailed("unreadable", "GET notice: keep.requested_at is not a time")
    try:
        moment = datetime.fromisoformat(requested_at)
    except ValueError:
        raise NoticeFailed("unreadable", "GET notice: keep.requested_at is not a time") from None
    if moment.utcoffset() is None:
        raise NoticeFailed("unreadable", "GET notice: keep.requested_at has no time zone")
    return Keep(notice_id, moment.astimezone(UTC))


#: What the judge calls to read a warned server's state (``NoticeClient.read_keep``): raises NoticeFailed.
ReadKeep = Callable[[str, Server], Awaitable[ServerState]]
#: Called with the start and end (the culler's wall clock) of every request the client made to a server.
OwnRequest = Callable[[str, str, datetime, datetime], None]


def _now() -> datetime:
    return datetime.now(UTC)


class NoticeClient:
    """The notice API of the servers of one hub client, with their users' own credentials."""

    def __init__(
        self,
        hub: HubClient,
        config: Config,
        credentials: ServerCredentials,
        *,
        own_request: OwnRequest | None = None,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._hub = hub
        self._public_url = config.public_url
        self._credentials = credentials
        self._own_request = own_request
        self._clock = clock

    async def put(self, user: str, server: Server, notice: Notice) -> None:
        # Bodyless first: a server without the extension answers 404, which the proxy does not count (module
        # docstring); the PUT goes only where the API answered.
        await self._send(user, server, "GET", "notice", b"")
        await self._send(user, server, "PUT", "notice", notice.body())

    async def withdraw(self, user: str, server: Server, notice_id: str) -> None:
        await self._send(user, server, "DELETE", f"notice?id={notice_id}", b"", ok=(204, 200))

    async def read_keep(self, user: str, server: Server) -> ServerState:
        return parse_server_state(await self._send(user, server, "GET", "notice", b""))

    async def _send(self, user: str, server: Server, method: str, path: str, body: bytes, ok: Any = (200,)) -> bytes:
        base = server_base_url(server, self._public_url)
        if base is None:
            raise NoticeFailed(
                "no_url",
                "no full_url from the hub and no --public-url: no address for the server (pass --public-url, or "
                "--no-warn-servers to warn through the hook and webhook alone)",
            )
        try:
            token = await self._credentials.for_server(user, server.name)
        except CredentialUnavailable as error:
            raise NoticeFailed("credential", str(error)) from None
        what = f"{method} {path.split('?', 1)[0]}"
        started = self._clock()
        try:
            response = await self._hub.http.request(
                "notice",
                method,
                base + API_PATH + path,
                ok=_ANY_STATUS,
                headers=_JSON if body else (),
                body=body,
                credential=token,
                max_body=MAX_ANSWER_BYTES,
            )
        except HubTimeout:
            raise NoticeFailed("timeout", f"{what}: no answer in time") from None
        except HubUnavailable as error:
            refused = caused_by(error, ConnectionRefusedError)
            kind, problem = ("unreachable", "connection refused") if refused else ("unreadable", "no answer")
            raise NoticeFailed(kind, f"{what}: {problem}") from None
        except HubStatusError as error:
            kind = "unreachable" if error.status in _NOT_SERVING else "status"
            raise NoticeFailed(kind, f"{what}: {error.status}") from None
        except HubError:
            # Over its cap, compressed, or otherwise not an answer that can be read.
            raise NoticeFailed("unreadable", f"{what}: the answer could not be read") from None
        finally:
            if self._own_request is not None:
                self._own_request(user, server.name, started, self._clock())
        status = response.status_code
        if status in ok:
            return response.content
        raise NoticeFailed(_kind_of(status), f"{what}: {status}")


def _kind_of(status: int) -> str:
    if status == 404:
        return "no_extension"
    if status in (401, 403) or 300 <= status < 400:
        return "forbidden"
    if status in _NOT_SERVING:
        return "unreachable"
    return "status"
