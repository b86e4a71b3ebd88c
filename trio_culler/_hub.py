"""HubClient: the only module that speaks HTTP to the hub.

It owns, for every request: the token header, percent-encoding of each path segment (nothing left safe), the
CapacityLimiter that bounds requests in flight, a total deadline per attempt (httpx's own timeouts are per
read/write, so a trickling answer would never trip them), retries of transient failures with capped
exponential backoff and jitter, and the mapping of httpx's exception tree onto ours::

    httpx.TimeoutException, trio.TooSlowError  -> HubTimeout       (retried)
    httpx.TransportError (connect, read, ...)   -> HubUnavailable   (retried)
    other httpx.RequestError (e.g. decoding)    -> HubProtocolError (not retried)
    401 / 403                                    -> HubAuthError     (not retried: the pass stops)
    429, 5xx                                     -> HubStatusError   (retried; Retry-After honoured)
    other unexpected status                      -> HubStatusError   (not retried)
    a body that is not the expected JSON         -> HubProtocolError (not retried)

Requests are ``httpx.Request`` objects handed straight to an ``httpx.AsyncBaseTransport``: by default
:class:`PoolTransport` over the trio/h11 pool in ``_http11`` (see there for why), ``MockTransport`` in tests,
and httpx's own client (``ClientTransport``) when ``--use-proxy-env`` asks for proxies.

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
from typing import Any
from urllib.parse import quote

import attrs
import httpx
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
from ._http11 import ConnectFailed, ConnectionLost, ConnectionPool, Origin, ProtocolViolation
from ._models import ModelError, User, structure_user
from ._redact import make_redactor

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

    def __init__(
        self, config: Config, transport: httpx.AsyncBaseTransport, limiter: trio.CapacityLimiter, token: str
    ) -> None:
        self._config = config
        # The transport is called directly, without httpx.AsyncClient: the culler needs none of its features
        # (no cookies, no redirects, no auth flows) and it costs ~50 µs of CPU per request.
        self._transport = transport
        self._headers = [
            ("Authorization", f"token {token}"),
            ("User-Agent", "trio-culler"),
            # The answers are small JSON documents on a local network: compression costs more than it saves.
            ("Accept-Encoding", "identity"),
        ]
        self._base = config.url.rstrip("/")
        self.limiter = limiter
        self._stats = HubStatistics()
        self._random = random.Random()
        self._token = config.api_token.strip()
        self._redact = make_redactor([self._token])

    def statistics(self) -> HubStatistics:
        return attrs.evolve(self._stats, requests=dict(self._stats.requests))

    # -- the one request path ------------------------------------------------------------------------------

    async def _request(
        self,
        kind: str,
        method: str,
        path: str,
        *,
        ok: frozenset[int],
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> httpx.Response:
        url = self._base + path
        attempt = 0
        while True:
            try:
                return await self._attempt(kind, method, url, ok=ok, params=params, headers=headers, body=body)
            except HubError as error:
                if not error.transient or attempt >= self._config.max_retries:
                    raise
                delay = self._backoff(attempt, error)
            attempt += 1
            self._stats.retries += 1
            await trio.sleep(delay)

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
        url: str,
        *,
        ok: frozenset[int],
        params: dict[str, str] | None,
        headers: dict[str, str] | None,
        body: bytes | None,
    ) -> httpx.Response:
        what = f"{method} {url}"
        async with self.limiter:
            stats = self._stats
            stats.requests[kind] = stats.requests.get(kind, 0) + 1
            stats.in_flight += 1
            stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
            try:
                with trio.fail_after(self._config.request_timeout):
                    request = httpx.Request(
                        method,
                        url,
                        params=params,
                        headers=self._headers if headers is None else [*self._headers, *headers.items()],
                        content=body,
                    )
                    response = await self._transport.handle_async_request(request)
                    response.request = request  # as httpx.AsyncClient does; error messages quote it
                    try:
                        await response.aread()
                    finally:
                        await response.aclose()
            except (httpx.TimeoutException, trio.TooSlowError):
                raise HubTimeout(f"{what}: no answer within {self._config.request_timeout:g} s") from None
            except httpx.TransportError as error:
                unavailable = HubUnavailable(self._redact(f"{what}: {type(error).__name__}: {_describe(error)}"))
                if _caused_by(error, ssl.SSLCertVerificationError):
                    # The hub's certificate does not verify against the CA: trying again a second later cannot
                    # change that, and each retry would only repeat the handshake and delay the clear error.
                    unavailable.transient = False
                raise unavailable from None
            except httpx.RequestError as error:
                # E.g. a Content-Encoding the body does not match: an answer we cannot read, like bad JSON. Left
                # unmapped it would escape every `except HubError` and take the whole pass down with it.
                raise HubProtocolError(self._redact(f"{what}: unreadable answer: {error}")) from None
            finally:
                stats.in_flight -= 1
        status = response.status_code
        if status in ok:
            return response
        message = self._redact(f"{what} -> {status}{_hub_message(response, self._redact)}")
        if status in (401, 403):
            raise HubAuthError(message)
        raise HubStatusError(message, status=status, retry_after=_retry_after(response))

    # -- the API calls -----------------------------------------------------------------------------------

    async def get_info(self) -> HubInfo:
        response = await self._request("version", "GET", "/", ok=frozenset({200}))
        model = self._json(response)
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
        headers = {"Accept": PAGINATION_MEDIA_TYPE} if paginate else None
        response = await self._request("list", "GET", "/users", ok=frozenset({200}), params=params, headers=headers)
        body = self._json(response)
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

    async def stop_server(self, user: str, server: str, *, remove: bool = False) -> StopOutcome:
        if server:
            path = f"/users/{quote_segment(user)}/servers/{quote_segment(server)}"
        else:
            path = f"/users/{quote_segment(user)}/server"
        body = b'{"remove": true}' if remove else None
        headers = {"Content-Type": "application/json"} if remove else None
        kind = "remove" if remove else "stop"
        ok = frozenset({200, 202, 204, 404})
        response = await self._request(kind, "DELETE", path, ok=ok, headers=headers, body=body)
        if response.status_code == 202:
            return StopOutcome.PENDING
        if response.status_code == 404:
            return StopOutcome.GONE
        return StopOutcome.STOPPED

    async def delete_user(self, user: str) -> DeleteOutcome:
        path = f"/users/{quote_segment(user)}"
        response = await self._request("delete_user", "DELETE", path, ok=frozenset({200, 204, 404}))
        return DeleteOutcome.GONE if response.status_code == 404 else DeleteOutcome.DELETED

    def _json(self, response: httpx.Response) -> Any:
        try:
            return json.loads(response.content)
        except (ValueError, RecursionError):
            # RecursionError: absurdly nested JSON. Unreadable like any other garbage, not a reason to crash.
            raise HubProtocolError(
                self._redact(
                    f"{response.request.method} {response.request.url}: the answer is not JSON "
                    f"({response.headers.get('content-type', 'no content type')})"
                )
            ) from None


def _chain(error: BaseException) -> list[BaseException]:
    """An exception, what caused it, and so on, including the members of exception groups (trio reports a
    failed connection as an OSError caused by a group of the OSErrors of each address it tried)."""
    found: list[BaseException] = []
    pending: list[BaseException] = [error]
    while pending and len(found) < 20:  # bounded: a chain could, in principle, loop
        current = pending.pop(0)
        if any(current is seen for seen in found):
            continue
        found.append(current)
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions[:3])
        cause = current.__cause__ or current.__context__
        if cause is not None:
            pending.append(cause)
    return found


def _describe(error: BaseException) -> str:
    """The distinct messages in an exception's chain. httpx's own is often empty or vague (a TLS failure under
    trio arrives as ``ConnectError('')`` caused by a bare BrokenResourceError caused by the ssl error that says
    why; a refused connection says "all attempts failed" and only a group member says "Connection refused")."""
    messages: list[str] = []
    for link in _chain(error):
        text = link.message if isinstance(link, BaseExceptionGroup) else str(link)
        # A wrapper often repeats its cause's message with more around it: keep whichever came first.
        if text and not any(text in earlier or earlier in text for earlier in messages):
            messages.append(text)
    return "; ".join(messages) or "no detail"


def _caused_by(error: BaseException, kind: type[BaseException]) -> bool:
    return any(isinstance(link, kind) for link in _chain(error))


def _pagination(value: Any) -> tuple[int | None, int | None]:
    if not isinstance(value, dict):
        return None, None
    total, limit = value.get("total"), value.get("limit")
    if type(total) is not int or total < 0 or type(limit) is not int or limit <= 0:
        return None, None
    return total, limit


def _hub_message(response: httpx.Response, redact: Callable[[str], str]) -> str:
    try:
        model = json.loads(response.content)
    except (ValueError, RecursionError):
        return ""
    message = model.get("message") if isinstance(model, dict) else None
    if not isinstance(message, str):
        return ""
    # Redact before truncating: a cut through the token would leave a prefix the caller could not recognise.
    return f": {redact(message):.300}"


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
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


class PoolTransport(httpx.AsyncBaseTransport):
    """httpx's transport interface over the lean trio/h11 pool in ``_http11`` (see there for why)."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        origin = Origin(url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        method = request.method.encode("ascii")
        try:
            raw = await self.pool.request(method, origin, url.raw_path, request.headers.raw, request.content)
        except ConnectFailed as error:
            raise httpx.ConnectError(str(error), request=request) from error
        except ConnectionLost as error:
            raise httpx.ReadError(str(error), request=request) from error
        except ProtocolViolation as error:
            raise httpx.RemoteProtocolError(str(error), request=request) from error
        return httpx.Response(raw.status, headers=raw.headers, content=raw.body, request=request)

    async def aclose(self) -> None:
        await self.pool.aclose()


@asynccontextmanager
async def open_hub_client(
    config: Config, *, transport: httpx.AsyncBaseTransport | None = None
) -> AsyncIterator[HubClient]:
    """A HubClient for ``config``; ``transport`` replaces the network (e.g. FakeHub's MockTransport)."""
    token = _header_token(config.api_token)
    limiter = trio.CapacityLimiter(config.concurrency or math.inf)
    if transport is not None:
        yield HubClient(config, transport, limiter, token)
        return
    ssl_context = make_ssl_context(config)
    if config.use_proxy_env:
        # Proxies (HTTP(S)_PROXY, NO_PROXY, their authentication) are httpx's business: its own client, with
        # trust_env, is used as the transport. Its pool must have room for every limiter token, or the surplus
        # would fail with PoolTimeout.
        connections = config.concurrency + 2 if config.concurrency else None
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(config.request_timeout),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            trust_env=True,
            verify=ssl_context or True,
            follow_redirects=False,
        )
        async with client:
            yield HubClient(config, ClientTransport(client), limiter, token)
        return
    async with PoolTransport(ConnectionPool(ssl_context=ssl_context)) as pool_transport:
        yield HubClient(config, pool_transport, limiter, token)


class ClientTransport(httpx.AsyncBaseTransport):
    """An httpx.AsyncClient seen as a transport: what ``--use-proxy-env`` routes requests through."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.client.send(request)
