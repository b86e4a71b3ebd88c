"""HubClient: the only module that speaks the hub's REST API, through ``httpx.AsyncClient``.

It owns, for every request: percent-encoding of each path segment (nothing left safe), the CapacityLimiter
that bounds requests in flight, a total deadline per attempt (a trickling answer must not outlive it), retries
of transient failures with capped exponential backoff and jitter, and the mapping of what goes wrong onto the
culler's errors (httpx's exceptions through ``_errors.hub_error_from_httpx``, statuses here)::

    no complete answer before the deadline      -> HubTimeout       (retried)
    httpx.TransportError (connect, read, h11     -> HubUnavailable   (retried, unless TLS failed in a way
      refused the answer)                                             trying again cannot change)
    httpx.DecodingError (a bad content coding)   -> HubProtocolError (not retried)
    401 / 403                                    -> HubAuthError     (not retried: the pass stops)
    429, 5xx                                     -> HubStatusError   (retried; Retry-After honoured)
    3xx                                          -> HubStatusError   (not retried; says where it points)
    other unexpected status                      -> HubStatusError   (not retried)
    a body that is not the expected JSON         -> HubProtocolError (not retried)

The requests travel through ``httpx.AsyncClient`` over ``_transport.TrioH11Transport`` by default (h11 on trio),
an injected transport in tests (``FakeHub``'s MockTransport), httpx's default transport (httpcore) with
``--use-proxy-env``. The same path, limiter, deadline, retries and errors serve a request to another origin
(:meth:`HubClient.get_json` with an absolute URL, e.g. a single-user server through the proxy).

Every message that quotes the hub or an exception passes through the client's redactor (then is cut to
length), and a token that cannot be sent in a header is refused up front (ConfigError), so neither a hub that
echoes the request nor an exception that quotes a header can carry the API token into a report, a log line or
a traceback.

The limiter is held for one attempt, never across a backoff sleep or a channel send, so a failing request does
not starve the others. A cancelled or timed-out DELETE is not an undo: the hub may still act on it; callers
record it as unknown and the next pass sees the truth.
"""

from __future__ import annotations

import json
import math
import random
import re
import ssl
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any
from urllib.parse import quote, urlencode

import attrs
import httpx
import trio

from ._api_url import suggest_api_url
from ._config import Config
from ._errors import (
    QUOTE_LIMIT,
    ConfigError,
    HubAuthError,
    HubError,
    HubProtocolError,
    HubStatusError,
    HubTimeout,
    hub_error_from_httpx,
)
from ._models import ModelError, User, structure_user
from ._redact import make_redactor
from ._transport import TrioH11Transport
from ._version import __version__

__all__ = [
    "PAGINATION_MEDIA_TYPE",
    "HubClient",
    "HubInfo",
    "HubStatistics",
    "Page",
    "SkippedItem",
    "check_client_settings",
    "make_ssl_context",
    "open_hub_client",
    "quote_segment",
]

#: The media type that asks a JupyterHub >= 2.0 for a page with ``_pagination`` instead of a plain list.
PAGINATION_MEDIA_TYPE = "application/jupyterhub-pagination+json"

_BACKOFF_FIRST = 0.5
_BACKOFF_CAP = 15.0
_RETRY_AFTER_CAP = 60.0
#: What an HTTP header value may hold (visible ASCII and inner spaces); anything else in a token could not be sent
#: and would end up quoted in an exception message instead.
_HEADER_SAFE_RE = re.compile(r"^[\x21-\x7e]+(?: +[\x21-\x7e]+)*$")
_VERSION_RE = re.compile(r"^\s*v?(\d+)(?:\.(\d+))?(?:\.(\d+))?")


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
    """Requests to one hub's REST API (and, with :meth:`get_json`, to other origins on the same terms).
    Create it with :func:`open_hub_client`."""

    def __init__(
        self,
        config: Config,
        client: httpx.AsyncClient,
        limiter: trio.CapacityLimiter,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        elsewhere: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``client`` carries the settings (headers, timeouts, TLS, proxies from the environment). Requests go
        through ``transport`` directly when one is given (see :func:`open_hub_client`), else ``client.send``;
        requests to other origins through ``elsewhere`` when given (other TLS trust than the hub's)."""
        self._config = config
        self._client = client
        self._transport = transport
        self._elsewhere = elsewhere
        self._sends_checkpoint = isinstance(transport, TrioH11Transport) and (
            elsewhere is None or isinstance(elsewhere, TrioH11Transport)
        )
        parts = httpx.URL(config.url)
        self._origin = f"{parts.scheme}://{parts.netloc.decode('ascii')}/"
        self._base = config.url.rstrip("/")
        self._timeout = config.request_timeout
        self.limiter = limiter
        self._stats = HubStatistics()
        self._random = random.Random()
        self._redact = make_redactor([config.api_token])
        # httpx's own per-read timeouts, for httpcore (--use-proxy-env); each attempt's deadline is the real bound.
        self._extensions = {"timeout": client.timeout.as_dict()}

    def statistics(self) -> HubStatistics:
        return attrs.evolve(self._stats, requests=dict(self._stats.requests))

    # -- the one request path ------------------------------------------------------------------------------

    async def request(
        self,
        kind: str,
        method: str,
        url: str,
        *,
        ok: Iterable[int] = (200,),
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        send_token: bool = True,
        retry_timeouts: bool = True,
        retries: int | None = None,
    ) -> httpx.Response:
        """Send one request and return its complete answer, or raise a :class:`HubError`.

        ``url`` is a path below ``--url`` (``/users``, already percent-encoded: see :func:`quote_segment`) or an
        absolute ``http(s)://`` URL of another origin (a single-user server through the proxy, the hub's OAuth
        endpoints). Either way the request shares the limiter, the per-attempt deadline, the retries and the
        error mapping of the hub's own requests; ``kind`` labels it in :meth:`statistics`. ``send_token=False``
        leaves the API token out (a request to a party that must not see it); ``retry_timeouts=False`` gives up
        after one deadline (a server that hung once would hang again); ``retries=0`` makes one attempt (for a
        caller that retries, and says so, itself).
        """
        if not url.startswith(("http://", "https://")):
            url = self._base + url
        fixed = self._client.headers
        if headers or not send_token:
            fixed = fixed.copy()
            fixed.update(headers)
            if not send_token:
                del fixed["Authorization"]
        # Built directly rather than with the client's build_request: the client has no cookies, base URL or
        # parameters to merge, and this is the hot path of a pass that stops 20,000 servers.
        request = httpx.Request(method, url, headers=fixed, content=body or None, extensions=self._extensions)
        accepted = ok if isinstance(ok, frozenset) else frozenset(ok)
        attempt = 0
        retries = self._config.max_retries if retries is None else retries
        while True:
            try:
                return await self._attempt(kind, request, accepted)
            except HubError as error:
                if not error.transient or attempt >= retries:
                    raise
                if not retry_timeouts and isinstance(error, HubTimeout):
                    raise
                delay = self._backoff(attempt, error)
            attempt += 1
            self._stats.retries += 1
            await trio.sleep(delay)

    async def get_json(self, url: str, *, kind: str = "get", headers: Sequence[tuple[str, str]] = ()) -> Any:
        """``GET url`` (a path below ``--url`` or an absolute URL, as for :meth:`request`) answered 200 with
        JSON: the decoded document, or HubError."""
        response = await self.request(kind, "GET", url, headers=headers)
        return self._json(response)

    async def get_elsewhere(self, kind: str, url: str) -> httpx.Response:
        """GET an absolute, percent-encoded ``url`` on another origin (a single-user server through the proxy),
        sharing this client's limiter, deadline, retries, headers and redaction. Every status is returned to
        the caller, who judges it (a 403 there is not the hub refusing the culler), except 429 and 5xx, which
        are retried as usual. A timeout is not retried: a server that hung once would hang again, and a pass
        must not spend ``max_retries`` deadlines on one server that can simply be decided from the hub's data."""
        return await self.request(kind, "GET", url, ok=_ELSEWHERE_OK, retry_timeouts=False)

    def _what(self, request: httpx.Request) -> str:
        """How error messages name a request; built only when one is needed."""
        return f"{request.method} {request.url}"

    def _backoff(self, attempt: int, error: HubError) -> float:
        if isinstance(error, HubStatusError) and error.retry_after is not None:
            return min(error.retry_after, _RETRY_AFTER_CAP)
        # "Equal jitter" (half fixed, half random): spreads the retries of many workers that failed together
        # while keeping each wait at least half the exponential step.
        ceiling = min(_BACKOFF_CAP, _BACKOFF_FIRST * 2**attempt)
        return self._random.uniform(ceiling / 2, ceiling)

    async def _attempt(self, kind: str, request: httpx.Request, ok: frozenset[int]) -> httpx.Response:
        stats = self._stats
        limiter = self.limiter
        if self._sends_checkpoint:
            try:
                # A free token is taken without the scheduling round ``acquire`` adds (acquire_nowait refuses
                # while others wait, so no one jumps the queue). The h11 transport's send is a checkpoint, and
                # raises Cancelled before any byte goes out.
                limiter.acquire_nowait()
            except trio.WouldBlock:
                await limiter.acquire()
        else:
            # Another transport (a MockTransport in tests) need not checkpoint at all: acquire does.
            await limiter.acquire()
        try:
            stats.requests[kind] = stats.requests.get(kind, 0) + 1
            stats.in_flight += 1
            stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
            try:
                # A deadline for the whole attempt: connecting, sending and reading the complete answer.
                with trio.move_on_after(self._timeout) as deadline:
                    response = await self._send(request)
                if deadline.cancelled_caught:
                    raise HubTimeout(f"{self._what(request)}: no answer within {self._timeout:g} s")
            except httpx.RequestError as error:
                raise hub_error_from_httpx(error, self._what(request), self._redact) from error
            finally:
                stats.in_flight -= 1
        finally:
            limiter.release()
        status = response.status_code
        if status in ok:
            return response
        message = self._redact(f"{self._what(request)} -> {status}{self._hub_message(response)}")
        if status in (401, 403):
            raise HubAuthError(message)
        if 300 <= status < 400:
            message += self._redirect_advice(request, response)
        raise HubStatusError(message, status=status, retry_after=_retry_after(response))

    async def _send(self, request: httpx.Request) -> httpx.Response:
        transport = self._transport
        if transport is None:
            return await self._client.send(request)
        if self._elsewhere is not None and not str(request.url).startswith(self._origin):
            transport = self._elsewhere
        # What AsyncClient.send does for a client without auth, redirects, hooks or cookies: the transport's
        # answer, read in full. Skipping the client's machinery (cookie extraction, the auth and redirect
        # generators) halves the CPU of a request over the h11 transport (benchmarks/request_cost.py).
        response = await transport.handle_async_request(request)
        response.request = request
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    def _hub_message(self, response: httpx.Response) -> str:
        try:
            model = json.loads(response.content)
        except (ValueError, RecursionError):
            return ""
        message = model.get("message") if isinstance(model, dict) else None
        if not isinstance(message, str):
            return ""
        # Redact before cutting: a cut through the token would leave a prefix no redactor could recognise.
        return f": {self._redact(message)[:QUOTE_LIMIT]}"

    def _redirect_advice(self, request: httpx.Request, response: httpx.Response) -> str:
        location = self._redact(response.headers.get("location", ""))[:QUOTE_LIMIT]
        advice = f" (the hub answered with a redirect{f' to {location}' if location else ''}"
        if str(request.url).startswith(self._base) and not self._base.endswith("/api"):
            # The classic mistake: --url=http://hub:8081/hub, whose / redirects to the login page.
            advice += f"; --url must be the hub's API URL, e.g. {suggest_api_url(self._base, location)}"
        return advice + ")"

    def _json(self, response: httpx.Response) -> Any:
        try:
            return json.loads(response.content)
        except (ValueError, RecursionError):
            # RecursionError: absurdly nested JSON. Unreadable like any other garbage, not a reason to crash.
            content_type = response.headers.get("content-type") or "no content type"
            raise HubProtocolError(
                self._redact(f"{self._what(response.request)}: the answer is not JSON ({content_type})")
            ) from None

    # -- the API calls -----------------------------------------------------------------------------------

    async def get_info(self, *, retries: int | None = None) -> HubInfo:
        """The hub's version (``GET /``, no token needed). ``retries=0``: one attempt, the caller retries."""
        response = await self.request("version", "GET", "/", retries=retries)
        model = self._json(response)
        version = model.get("version") if isinstance(model, dict) else None
        if not isinstance(version, str):
            raise HubProtocolError(f"GET {self._base}/: no version in the answer")
        return HubInfo(version, parse_release(version))

    async def get_token_owner(self, *, retries: int | None = None) -> dict[str, Any] | None:
        """Who the token is (``GET /user``): the owner's model, with the token's expanded ``scopes`` on
        JupyterHub 2+. Every valid token may read it; 401/403 means the token itself is refused. None when the
        hub has no such endpoint (404) or answers something that is not an object: the caller falls back."""
        response = await self.request("whoami", "GET", "/user", ok=(200, 404), retries=retries)
        if response.status_code == 404:
            return None
        model = self._json(response)
        return model if isinstance(model, dict) else None

    async def list_users(self, *, state: str | None, offset: int, limit: int | None, paginate: bool = True) -> Page:
        params: dict[str, str] = {}
        if state:
            params["state"] = state
        if paginate:
            params["offset"] = str(offset)
        if limit:
            params["limit"] = str(limit)
        target = f"/users?{urlencode(params)}" if params else "/users"
        body = await self.get_json(target, kind="list", headers=_PAGINATED if paginate else ())
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
                where = f"item {offset + index} of the page at offset {offset}"
                if isinstance(name, str) and name:
                    label = _printable(name)
                elif name == "":
                    label = f"'' (an empty name, {where})"
                else:
                    label = where
                skipped.append(SkippedItem(self._redact(label), self._redact(str(error))))
        return Page(users, skipped, total, offset, page_limit)

    async def get_user(self, name: str) -> User | None:
        """One user's model (``GET /users/{name}``, for ``--explain``); None when the hub has no such user."""
        target = f"/users/{quote_segment(name)}"
        response = await self.request("get_user", "GET", target, ok=_GET_USER_OK)
        if response.status_code == 404:
            return None
        try:
            return structure_user(self._json(response))
        except ModelError as error:
            raise HubProtocolError(self._redact(f"GET {self._base}{target}: {error}")) from None

    async def stop_server(self, user: str, server: str, *, remove: bool = False) -> int:
        """DELETE the server; the hub's status: 204 (or 200) stopped, 202 still stopping, 404 already gone."""
        if server:
            target = f"/users/{quote_segment(user)}/servers/{quote_segment(server)}"
        else:
            target = f"/users/{quote_segment(user)}/server"
        if remove:
            response = await self.request(
                "remove", "DELETE", target, ok=_STOP_OK, headers=_JSON_BODY, body=b'{"remove": true}'
            )
        else:
            response = await self.request("stop", "DELETE", target, ok=_STOP_OK)
        return response.status_code

    async def delete_user(self, user: str) -> int:
        """DELETE the user; the hub's status: 204 (or 200) deleted, 404 already gone."""
        response = await self.request("delete_user", "DELETE", f"/users/{quote_segment(user)}", ok=_DELETE_USER_OK)
        return response.status_code


def _printable(text: str) -> str:
    """``text`` as it can be logged and encoded: a lone surrogate (from a JSON ``\\udXXX`` escape) escaped."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


_PAGINATED = (("Accept", PAGINATION_MEDIA_TYPE),)
_JSON_BODY = (("Content-Type", "application/json"),)
_LIST_OK = frozenset({200})
_GET_USER_OK = frozenset({200, 404})
_STOP_OK = frozenset({200, 202, 204, 404})
_DELETE_USER_OK = frozenset({200, 204, 404})
_ELSEWHERE_OK = frozenset(status for status in range(100, 500) if status != 429)


def _pagination(value: Any) -> tuple[int | None, int | None]:
    if not isinstance(value, dict):
        return None, None
    total, limit = value.get("total"), value.get("limit")
    if type(total) is not int or total < 0 or type(limit) is not int or limit <= 0:
        return None, None
    return total, limit


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


@asynccontextmanager
async def open_hub_client(
    config: Config, *, transport: httpx.AsyncBaseTransport | None = None
) -> AsyncIterator[HubClient]:
    """A HubClient for ``config``; ``transport`` replaces the network (e.g. FakeHub's MockTransport) and stays
    its caller's to close."""
    headers = {
        "Authorization": f"token {_header_token(config.api_token)}",
        "User-Agent": f"trio-culler/{__version__}",
        # The answers are small JSON documents on a local network: compression costs more than it saves.
        "Accept-Encoding": "identity",
    }
    limiter = trio.CapacityLimiter(config.concurrency or math.inf)
    ssl_context = make_ssl_context(config)
    injected = transport is not None
    elsewhere: TrioH11Transport | None = None
    if transport is None and not config.use_proxy_env:
        # Idle connections to keep: as many as can be in flight at once (the limiter), within reason.
        idle = min(config.concurrency or 64, 256)
        transport = TrioH11Transport(ssl_context=ssl_context, max_idle_per_origin=idle)
        if ssl_context is not None:
            # Other origins (the proxy's public side) have certificates from the system's CAs, not the hub's
            # internal one: a transport of their own, with the default TLS context.
            elsewhere = TrioH11Transport(max_idle_per_origin=idle)
    # With --use-proxy-env (transport still None) httpx builds its default transport: httpcore, which honours
    # HTTP(S)_PROXY, NO_PROXY and their authentication. Its pool must have room for every limiter token, or the
    # surplus would fail with PoolTimeout.
    connections = config.concurrency + 2 if config.concurrency else None
    client = httpx.AsyncClient(
        headers=headers,
        transport=transport,
        timeout=httpx.Timeout(config.request_timeout),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        trust_env=config.use_proxy_env,
        verify=ssl_context or True,
        follow_redirects=False,
        # A client that holds an admin token keeps no cookies and sends none: the hub's API needs none.
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
    )
    try:
        # With --use-proxy-env httpx's client routes each request by the environment's proxy settings; otherwise
        # there is one transport, which the hub client uses directly.
        yield HubClient(config, client, limiter, transport=transport, elsewhere=elsewhere)
    finally:
        if elsewhere is not None:
            await elsewhere.aclose()
        if not injected:
            await client.aclose()  # and with it the transport it was given or built
