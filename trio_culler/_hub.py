"""HubClient: the only module that speaks the hub's REST API.

It owns, for every request: percent-encoding of each path segment (nothing left safe), the CapacityLimiter
that bounds requests in flight, a total deadline per attempt (a trickling answer must not outlive it), retries
of transient failures with capped exponential backoff and jitter, and the mapping of what the transport raises
onto the culler's errors::

    no complete answer before the deadline      -> HubTimeout       (retried)
    TransportError (connect, connection lost,    -> HubUnavailable   (retried, unless the certificate was
      not HTTP)                                                       rejected)
    AnswerUnreadable (e.g. a bad content coding) -> HubProtocolError (not retried)
    401 / 403                                    -> HubAuthError     (not retried: the pass stops)
    429, 5xx                                     -> HubStatusError   (retried; Retry-After honoured)
    other unexpected status                      -> HubStatusError   (not retried)
    a body that is not the expected JSON         -> HubProtocolError (not retried)

The requests travel through a ``_transport.HubTransport``: by default the lean HTTP/1.1 pool of ``_http11``,
an injected ``httpx`` transport in tests (``FakeHub``'s MockTransport), httpx's own client with
``--use-proxy-env``.

Every message that quotes the hub or an exception passes through the client's redactor, and a token that
cannot be sent in a header is refused up front (ConfigError), so neither a hub that echoes the request nor an
exception that quotes a header can carry the API token into a report, a log line or a traceback.

The limiter is held for one attempt, never across a backoff sleep or a channel send, so a failing request does
not starve the others. A cancelled or timed-out DELETE is not an undo: the hub may still act on it; callers
record it as unknown and the next pass sees the truth.
"""

from __future__ import annotations

import enum
import json
import math
import random
import re
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import attrs
import trio

from ._config import Config
from ._errors import (
    ConfigError,
    HubAuthError,
    HubError,
    HubProtocolError,
    HubStatusError,
    HubTimeout,
    HubUnavailable,
)
from ._http11 import RawResponse, TransportError
from ._models import ModelError, User, structure_user
from ._redact import make_redactor
from ._transport import AnswerUnreadable, HubTransport, PoolTransport, TransportTimeout
from ._version import __version__

if TYPE_CHECKING:
    import httpx

__all__ = [
    "DeleteOutcome",
    "HubClient",
    "HubInfo",
    "HubStatistics",
    "Page",
    "SkippedItem",
    "StopOutcome",
    "check_client_settings",
    "make_ssl_context",
    "open_hub_client",
    "quote_segment",
]

PAGINATION_MEDIA_TYPE = "application/jupyterhub-pagination+json"
#: The scopes the culler needs; named in the error a 401/403 produces.
REQUIRED_SCOPES = ("list:users", "read:users:activity", "read:servers", "delete:servers")
USER_DELETION_SCOPE = "admin:users"

_BACKOFF_FIRST = 0.5
_BACKOFF_CAP = 15.0
_RETRY_AFTER_CAP = 60.0
#: What an HTTP header value may hold (visible ASCII and inner spaces); anything else in a token could not be sent
#: and would end up quoted in an exception message instead.
_HEADER_SAFE_RE = re.compile(r"^[\x21-\x7e]+(?: +[\x21-\x7e]+)*$")
_VERSION_RE = re.compile(r"^\s*v?(\d+)(?:\.(\d+))?(?:\.(\d+))?")


class StopOutcome(enum.Enum):
    STOPPED = "stopped"  # 204 (or 200): the server is down
    PENDING = "pending"  # 202: still stopping after the hub's slow_stop_timeout
    GONE = "gone"  # 404: the user or server no longer exists


class DeleteOutcome(enum.Enum):
    DELETED = "deleted"
    GONE = "gone"


def quote_segment(segment: str) -> str:
    """Percent-encode one path segment with nothing left safe: ``/ # ? ; % @ +``, spaces, non-ASCII, and the
    dots of a name that is only ``.`` or ``..``."""
    quoted = quote(segment, safe="")
    if quoted in (".", ".."):
        # Dot-segments are removed by every RFC 3986 client, httpx included: user "." would turn
        # DELETE /users/./server into DELETE /users/server, which deletes the user called "server".
        return quoted.replace(".", "%2E")
    return quoted


@attrs.frozen
class HubInfo:
    version: str
    #: (major, minor, patch) when the version string could be read, else None (then the newest API is assumed).
    release: tuple[int, int, int] | None

    @property
    def has_state_filter(self) -> bool:
        return self.release is None or self.release >= (1, 3, 0)

    @property
    def has_pagination(self) -> bool:
        return self.release is None or self.release >= (2, 0, 0)


def parse_release(version: str) -> tuple[int, int, int] | None:
    match = _VERSION_RE.match(version)
    if match is None:
        return None
    major, minor, patch = (int(part) if part else 0 for part in match.groups())
    return major, minor, patch


@attrs.frozen
class SkippedItem:
    """A list item that could not be read; it is not acted upon."""

    label: str
    problem: str


@attrs.frozen
class Page:
    users: Sequence[User]
    skipped: Sequence[SkippedItem]
    #: None for a plain-list answer (hubs before 2.0, or no pagination): then this page is everything.
    total: int | None
    offset: int
    limit: int | None


@attrs.define
class HubStatistics:
    requests: dict[str, int] = attrs.field(factory=dict)
    retries: int = 0
    in_flight: int = 0
    max_in_flight: int = 0


def make_ssl_context(config: Config) -> ssl.SSLContext | None:
    """The TLS context for hub traffic, or None for plain HTTP / system defaults.

    With ``ssl_enabled`` the client certificate and CA come from the files a hub gives its managed services
    (``JUPYTERHUB_SSL_*``) when present, else from ``internal_certs_location`` laid out as JupyterHub's
    internal_ssl writes it. The server certificate is always verified against that CA.
    """
    if not config.ssl_enabled:
        return None
    location = config.internal_certs_location.rstrip("/")
    keyfile = config.ssl_keyfile or f"{location}/hub-internal/hub-internal.key"
    certfile = config.ssl_certfile or f"{location}/hub-internal/hub-internal.crt"
    cafile = config.ssl_client_ca or f"{location}/hub-ca/hub-ca.crt"
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
        context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(f"--ssl-enabled: cannot load TLS files ({certfile}, {keyfile}, {cafile}): {error}") from None
    return context


class HubClient:
    """Requests to one hub's REST API. Create it with :func:`open_hub_client`."""

    def __init__(self, config: Config, transport: HubTransport, limiter: trio.CapacityLimiter) -> None:
        self._config = config
        self._transport = transport
        self._base = config.url.rstrip("/")
        self._timeout = config.request_timeout
        self.limiter = limiter
        self._stats = HubStatistics()
        self._random = random.Random()
        self._redact = make_redactor([config.api_token.strip()])

    def statistics(self) -> HubStatistics:
        return attrs.evolve(self._stats, requests=dict(self._stats.requests))

    # -- the one request path ------------------------------------------------------------------------------

    async def _request(
        self,
        kind: str,
        method: str,
        target: str,
        *,
        ok: frozenset[int],
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        retry_timeouts: bool = True,
    ) -> RawResponse:
        attempt = 0
        while True:
            try:
                return await self._attempt(kind, method, target, ok=ok, headers=headers, body=body)
            except HubError as error:
                if not error.transient or attempt >= self._config.max_retries:
                    raise
                if not retry_timeouts and isinstance(error, HubTimeout):
                    raise
                delay = self._backoff(attempt, error)
            attempt += 1
            self._stats.retries += 1
            await trio.sleep(delay)

    def _what(self, method: str, target: str) -> str:
        """How error messages name a request; built only when one is needed."""
        if _is_absolute(target):
            return f"{method} {target}"
        return f"{method} {self._base}{target}"

    def _backoff(self, attempt: int, error: HubError) -> float:
        if isinstance(error, HubStatusError) and error.retry_after is not None:
            return min(error.retry_after, _RETRY_AFTER_CAP)
        # "Equal jitter" (half fixed, half random): spreads the retries of many workers that failed together
        # while keeping each wait at least half the exponential step.
        ceiling = min(_BACKOFF_CAP, _BACKOFF_FIRST * 2**attempt)
        return self._random.uniform(ceiling / 2, ceiling)

    async def _attempt(
        self,
        kind: str,
        method: str,
        target: str,
        *,
        ok: frozenset[int],
        headers: Sequence[tuple[str, str]],
        body: bytes,
    ) -> RawResponse:
        limiter = self.limiter
        try:
            # A free token needs no trip through the scheduler; the request itself waits for its answer, so
            # this stays a checkpoint. acquire_nowait() also refuses while others queue: the order is kept.
            limiter.acquire_nowait()
        except trio.WouldBlock:
            await limiter.acquire()
        stats = self._stats
        stats.requests[kind] = stats.requests.get(kind, 0) + 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            # A deadline for the whole attempt: connecting, sending and reading the complete answer.
            with trio.CancelScope(deadline=trio.current_time() + self._timeout) as deadline:
                if _is_absolute(target):
                    response = await self._transport.request_url(method, target, headers, body)
                else:
                    response = await self._transport.request(method, target, headers, body)
            if deadline.cancelled_caught:
                raise TransportTimeout  # ours, or one of httpx's own (--use-proxy-env): the same to the caller
        except TransportTimeout:
            raise HubTimeout(f"{self._what(method, target)}: no answer within {self._timeout:g} s") from None
        except AnswerUnreadable as error:
            raise HubProtocolError(self._redact(f"{self._what(method, target)}: unreadable answer: {error}")) from None
        except TransportError as error:
            unavailable = HubUnavailable(self._redact(f"{self._what(method, target)}: {error}"))
            unavailable.transient = error.retryable
            raise unavailable from None
        finally:
            stats.in_flight -= 1
            limiter.release()
        status = response.status
        if status in ok:
            return response
        message = self._redact(f"{self._what(method, target)} -> {status}{_hub_message(response, self._redact)}")
        if status in (401, 403):
            raise HubAuthError(message)
        raise HubStatusError(message, status=status, retry_after=_retry_after(response))

    # -- the API calls -----------------------------------------------------------------------------------

    async def get_info(self) -> HubInfo:
        response = await self._request("version", "GET", "/", ok=frozenset({200}))
        model = self._json(response, "GET", "/")
        version = model.get("version") if isinstance(model, dict) else None
        if not isinstance(version, str):
            raise HubProtocolError(f"GET {self._base}/: no version in the answer")
        return HubInfo(version, parse_release(version))

    async def list_users(self, *, state: str | None, offset: int, limit: int | None, paginate: bool = True) -> Page:
        params: dict[str, str] = {}
        if state:
            params["state"] = state
        if paginate:
            params["offset"] = str(offset)
        if limit:
            params["limit"] = str(limit)
        target = f"/users?{urlencode(params)}" if params else "/users"
        headers = _PAGINATED if paginate else ()
        response = await self._request("list", "GET", target, ok=_LIST_OK, headers=headers)
        body = self._json(response, "GET", target)
        if isinstance(body, list):
            items: list[Any] = body
            total = None
            page_limit = None
        elif isinstance(body, dict) and isinstance(body.get("items"), list):
            items = body["items"]
            pagination = body.get("_pagination")
            total, page_limit = _pagination(pagination)
            if total is None:
                raise HubProtocolError(
                    self._redact(f"GET {self._base}/users: unreadable _pagination {pagination!r:.200}")
                )
        else:
            raise HubProtocolError(f"GET {self._base}/users: expected a list or a page of users")
        users: list[User] = []
        skipped: list[SkippedItem] = []
        for index, item in enumerate(items):
            try:
                users.append(structure_user(item))
            except ModelError as error:
                name = item.get("name") if isinstance(item, dict) else None
                label = name if isinstance(name, str) else f"item {offset + index} of the page at offset {offset}"
                skipped.append(SkippedItem(self._redact(label), self._redact(str(error))))
        return Page(users, skipped, total, offset, page_limit)

    async def get_user(self, name: str) -> User | None:
        """One user's model (``GET /users/{name}``, for ``--explain``); None when the hub has no such user."""
        target = f"/users/{quote_segment(name)}"
        response = await self._request("get_user", "GET", target, ok=_GET_USER_OK)
        if response.status == 404:
            return None
        try:
            return structure_user(self._json(response, "GET", target))
        except ModelError as error:
            raise HubProtocolError(self._redact(f"GET {self._base}{target}: {error}")) from None

    async def stop_server(self, user: str, server: str, *, remove: bool = False) -> StopOutcome:
        if server:
            target = f"/users/{quote_segment(user)}/servers/{quote_segment(server)}"
        else:
            target = f"/users/{quote_segment(user)}/server"
        if remove:
            response = await self._request(
                "remove", "DELETE", target, ok=_STOP_OK, headers=_JSON_BODY, body=b'{"remove": true}'
            )
        else:
            response = await self._request("stop", "DELETE", target, ok=_STOP_OK)
        if response.status == 202:
            return StopOutcome.PENDING
        if response.status == 404:
            return StopOutcome.GONE
        return StopOutcome.STOPPED

    async def delete_user(self, user: str) -> DeleteOutcome:
        target = f"/users/{quote_segment(user)}"
        response = await self._request("delete_user", "DELETE", target, ok=_DELETE_USER_OK)
        return DeleteOutcome.GONE if response.status == 404 else DeleteOutcome.DELETED

    async def get_elsewhere(self, kind: str, url: str) -> RawResponse:
        """GET an absolute, percent-encoded ``url`` on another origin (a single-user server through the proxy),
        sharing this client's limiter, deadline, retries, headers and redaction. Every status is returned to
        the caller, who judges it (a 403 there is not the hub refusing the culler), except 429 and 5xx, which
        are retried as usual. A timeout is not retried: a server that hung once would hang again, and a pass
        must not spend ``max_retries`` deadlines on one server that can simply be decided from the hub's data."""
        return await self._request(kind, "GET", url, ok=_ELSEWHERE_OK, retry_timeouts=False)

    def _json(self, response: RawResponse, method: str, target: str) -> Any:
        try:
            return json.loads(response.body)
        except (ValueError, RecursionError):
            # RecursionError: absurdly nested JSON. Unreadable like any other garbage, not a reason to crash.
            raise HubProtocolError(
                self._redact(
                    f"{self._what(method, target)}: the answer is not JSON "
                    f"({response.header('content-type') or 'no content type'})"
                )
            ) from None


_PAGINATED = (("Accept", PAGINATION_MEDIA_TYPE),)
_JSON_BODY = (("Content-Type", "application/json"),)
_LIST_OK = frozenset({200})
_GET_USER_OK = frozenset({200, 404})
_STOP_OK = frozenset({200, 202, 204, 404})
_DELETE_USER_OK = frozenset({200, 204, 404})
_ELSEWHERE_OK = frozenset(status for status in range(100, 500) if status != 429)


def _is_absolute(target: str) -> bool:
    return target.startswith(("http://", "https://"))


def _pagination(value: Any) -> tuple[int | None, int | None]:
    if not isinstance(value, dict):
        return None, None
    total, limit = value.get("total"), value.get("limit")
    if type(total) is not int or total < 0 or type(limit) is not int or limit <= 0:
        return None, None
    return total, limit


def _hub_message(response: RawResponse, redact: Callable[[str], str]) -> str:
    try:
        model = json.loads(response.body)
    except (ValueError, RecursionError):
        return ""
    message = model.get("message") if isinstance(model, dict) else None
    if not isinstance(message, str):
        return ""
    # Redact before truncating: a cut through the token would leave a prefix the caller could not recognise.
    return f": {redact(message):.300}"


def _retry_after(response: RawResponse) -> float | None:
    value = response.header("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP-date: rare from a hub; the ordinary backoff applies
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def check_client_settings(config: Config) -> None:
    """Raise ConfigError now for what would otherwise fail only once requests start: a token that cannot be
    sent in a header, TLS files that cannot be loaded. The CLI calls it before it starts, to exit 2."""
    _header_token(config.api_token)
    make_ssl_context(config)


def _header_token(raw: str) -> str:
    """The token as it can go in a header, or ConfigError (which never quotes it).

    Surrounding whitespace is dropped: a Kubernetes secret or a file often ends in a newline, and a hub strips
    it from the header anyway. A control or non-ASCII character inside cannot be sent at all; httpx would fail
    on every request with an error that quotes the whole header, token included.
    """
    token = raw.strip()
    if token and not _HEADER_SAFE_RE.match(token):
        raise ConfigError(
            "JUPYTERHUB_API_TOKEN contains characters that cannot be sent in an HTTP header "
            "(control characters or non-ASCII); check how the secret is provided"
        )
    return token


@asynccontextmanager
async def open_hub_client(
    config: Config, *, transport: httpx.AsyncBaseTransport | None = None
) -> AsyncIterator[HubClient]:
    """A HubClient for ``config``; ``transport`` replaces the network (e.g. FakeHub's MockTransport)."""
    headers = [
        ("Authorization", f"token {_header_token(config.api_token)}"),
        ("User-Agent", f"trio-culler/{__version__}"),
        # The answers are small JSON documents on a local network: compression costs more than it saves.
        ("Accept-Encoding", "identity"),
    ]
    limiter = trio.CapacityLimiter(config.concurrency or math.inf)
    if transport is not None:
        from ._httpx_transport import HttpxTransport

        # The caller owns the transport and closes it.
        yield HubClient(config, HttpxTransport(config.url, headers, transport.handle_async_request), limiter)
        return
    ssl_context = make_ssl_context(config)
    if config.use_proxy_env:
        from ._httpx_transport import HttpxTransport, proxy_client

        async with proxy_client(config, ssl_context) as client:
            yield HubClient(config, HttpxTransport(config.url, headers, client.send), limiter)
        return
    pool_transport = PoolTransport(config.url, headers, ssl_context=ssl_context)
    try:
        yield HubClient(config, pool_transport, limiter)
    finally:
        await pool_transport.aclose()
