"""The request engine under the hub client: every request the culler sends to the hub's API or to a user's server.

:meth:`RequestEngine.request` owns, per request: the credential (decided by ``_clients.TokenScope`` from the
request's final URL), the CapacityLimiter that bounds requests in flight, a total deadline per attempt (a
trickling answer must not outlive it), a cap on the answer's bytes, retries of transient failures (``_retry``),
the mapping of what goes wrong onto the culler's errors (httpx's exceptions through
``_errors.hub_error_from_httpx``, statuses here), and statistics::

    no complete answer before the deadline      -> HubTimeout       (retried, except outside the API and for a
                                                                      POST, which the hub may have acted on)
    httpx.TransportError (connect, read, h11     -> HubUnavailable   (retried, unless TLS failed in a way
      refused the answer)                                             trying again cannot change)
    an answer longer than its cap, or encoded    -> HubProtocolError (not retried)
      though asked not to be; a bad encoding
    401 / 403                                    -> HubAuthError     (not retried: the pass stops)
    429, 5xx                                     -> HubStatusError   (retried; Retry-After honoured from the hub)
    3xx                                          -> HubStatusError   (not retried; says where it points)
    other unexpected status                      -> HubStatusError   (not retried)

A request under ``--url`` carries the culler's token; any other request only the credential its caller passed
for it, or none. The same decision sets the rest of the trust: a request outside the API (a user's server, i.e.
its user's code) gets a short deadline of its own, no retry after a timeout, no honoured Retry-After and no
quoted body in messages.

The requests travel over ``_transport.TrioH11Transport`` by default (h11 on trio), an injected transport in
tests (``FakeHub``'s MockTransport), httpx's default one (httpcore) with ``--use-proxy-env``. Every message that
quotes the hub or an exception passes through the redactor (then is cut to length). The limiter is held for
one attempt, never across a backoff sleep or a channel send. A cancelled or timed-out DELETE is not an undo:
the hub may still act on it; callers record it as unknown and the next pass sees the truth.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import attrs
import httpx
import trio

from ._api_url import suggest_api_url
from ._clients import TokenScope, header_token, http_client, make_ssl_context
from ._config import Config
from ._errors import (
    QUOTE_LIMIT,
    AnswerTooLarge,
    HubAuthError,
    HubError,
    HubProtocolError,
    HubStatusError,
    HubTimeout,
    hub_error_from_httpx,
)
from ._fast_request import fast_targets
from ._redact import make_redactor, url_secrets
from ._retry import Backoff, retry
from ._transport import MAX_BODY_EXTENSION, TrioH11Transport, refuse_encoded

__all__ = [
    "INSPECT_TIMEOUT",
    "REQUEST_BACKOFF",
    "HubStatistics",
    "RequestEngine",
    "open_request_engine",
    "read_whole",
]

#: Most seconds one attempt at a request outside the hub's API may take (a user's server; less when
#: ``--request-timeout`` is shorter). jupyter_server lists its kernels from memory in milliseconds; a server that
#: takes longer is decided from the hub's data, and must not hold a limiter token (and a worker) for a minute.
INSPECT_TIMEOUT: Final = 10.0
#: The backoff of a request's retries: workers that failed together spread out (jitter); the hub's Retry-After
#: is honoured up to a minute.
REQUEST_BACKOFF: Final = Backoff(first=0.5, cap=15.0, jitter=True, asked_cap=60.0)


@attrs.define
class HubStatistics:
    requests: dict[str, int] = attrs.field(factory=dict)
    retries: int = 0
    in_flight: int = 0
    max_in_flight: int = 0


class RequestEngine:
    """Requests to the hub's API and, on the terms of :class:`TokenScope`, to other URLs. Create it with
    :func:`open_request_engine`."""

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
        through ``transport`` directly when one is given (see :func:`open_request_engine`), else ``client.send``;
        requests to other origins through ``elsewhere`` when given (other TLS trust than the hub's)."""
        self._client = client
        self._transport = transport
        self._elsewhere = elsewhere
        # TrioH11Transport checks for cancellation before it sends a byte, and its reads and writes are trio
        # checkpoints: a free limiter token can then be taken without the scheduling round ``acquire`` adds.
        # Another transport (a MockTransport in tests) need not checkpoint at all: acquire does.
        self._transport_checkpoints = isinstance(transport, TrioH11Transport) and (
            elsewhere is None or isinstance(elsewhere, TrioH11Transport)
        )
        parts = httpx.URL(config.url)
        self._origin = f"{parts.scheme}://{parts.netloc.decode('ascii')}/"
        self.base = config.url.rstrip("/")
        self._token = header_token(config.api_token)
        self.scope = TokenScope(config.url, self._token)
        self._retries = config.max_retries
        self._timeout = config.request_timeout
        self._elsewhere_timeout = min(config.request_timeout, INSPECT_TIMEOUT)
        self.limiter = limiter
        self._stats = HubStatistics()
        self._secrets = [config.api_token, *url_secrets(config.url)]
        self.redact = make_redactor(self._secrets)
        base_headers = list(client.headers.multi_items())
        self._plain_headers = httpx.Headers(base_headers)
        self._hub_headers = httpx.Headers(base_headers)
        if self.scope.authorization is not None:
            self._hub_headers["Authorization"] = self.scope.authorization
        self._fast = fast_targets(config.url, self._hub_headers)
        # httpx's own per-read timeouts, for httpcore (--use-proxy-env); each attempt's deadline is the real bound.
        self._extensions: dict[str, Any] = {"timeout": client.timeout.as_dict()}

    def statistics(self) -> HubStatistics:
        return attrs.evolve(self._stats, requests=dict(self._stats.requests))

    async def request(
        self,
        kind: str,
        method: str,
        url: str,
        *,
        ok: Iterable[int] = (200,),
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        credential: str | None = None,
        max_body: int | None = None,
        retries: int | None = None,
        before_retry: Callable[[], Awaitable[None]] | None = None,
    ) -> httpx.Response:
        """Send one request and return its complete answer, or raise a :class:`HubError`.

        ``url`` is a path below ``--url`` (``/users``, already percent-encoded: see ``_hub.quote_segment``) or an
        absolute ``http(s)://`` URL. The culler's token goes with it only when the final URL is under the hub's
        API (:class:`TokenScope`); ``credential`` (a token for that URL alone) replaces it, anywhere. ``kind``
        labels the request in :meth:`statistics`; ``max_body`` caps the answer's bytes (the transport's own
        limit otherwise); ``retries=0`` makes one attempt (for a caller that retries, and says so, itself).
        ``before_retry`` is awaited after each wait, before the attempt it precedes: what it raises ends the
        request (a stop whose server changed during the wait must not be sent again).

        A credential anywhere else is a bug, refused with ValueError before anything is sent: an
        ``Authorization`` among ``headers``, or the culler's own token as ``credential`` outside the scope.
        """
        target = None
        if not url.startswith(("http://", "https://")):
            if self._fast is not None:
                target = self._fast.url(url)
            url = self.base + url
        if target is None:
            target = httpx.URL(url)
        in_scope = self.scope.contains(target)
        if credential is not None:
            if not in_scope and credential.strip() == self._token:
                raise ValueError("the culler's own token is not a credential for a URL outside --url")
            fixed = self._plain_headers.copy()
            fixed["Authorization"] = f"token {credential}"
        else:
            fixed = self._hub_headers if in_scope else self._plain_headers
        if headers:
            if any(name.lower() == "authorization" for name, _value in headers):
                raise ValueError("a request's credential is decided by its URL, or passed as credential=")
            fixed = fixed.copy()
            fixed.update(headers)
        extensions = self._extensions
        if max_body is not None:
            extensions = {**extensions, MAX_BODY_EXTENSION: max_body}
        # Built directly rather than with the client's build_request: the client has no cookies, base URL or
        # parameters to merge, and this is the hot path of a pass that stops 20,000 servers.
        request = None
        if fixed is self._hub_headers and not body and self._fast is not None:
            request = self._fast.request(method, target, extensions)
        if request is None:
            request = httpx.Request(method, target, headers=fixed, content=body or None, extensions=extensions)
        accepted = ok if isinstance(ok, frozenset) else frozenset(ok)

        async def attempt() -> httpx.Response:
            return await self._attempt(kind, request, accepted, in_scope, credential)

        return await retry(
            attempt,
            failure=HubError,
            backoff=REQUEST_BACKOFF,
            retries=self._retries if retries is None else retries,
            # After a timeout the request may have been acted on: sent again only if acting twice means the same
            # as once. And a user's server that hung once would hang again; a pass must not spend max_retries
            # deadlines on a server that can simply be decided from the hub's data.
            retryable=_retryable if in_scope and method in _IDEMPOTENT else _retryable_unless_timeout,
            # How long to wait is the hub's to ask, not a user's server's: it could park a worker for minutes.
            asked=_retry_after if in_scope else _nothing_asked,
            before_wait=self._count_retry,
            sleep=trio.sleep if before_retry is None else _then(before_retry),
        )

    async def get_elsewhere(self, kind: str, url: str, *, credential: str | None, max_body: int) -> tuple[int, bytes]:
        """GET an absolute, percent-encoded ``url`` outside the hub's API (a single-user server through the
        proxy) with ``credential`` alone (None: no Authorization at all), reading at most ``max_body`` bytes of
        its answer. Returns the status and the body: every status is the caller's to judge (a 403 there is not
        the hub refusing the culler), except 429 and 5xx, which are retried. Shares the limiter and statistics
        with the hub's requests; see :meth:`request` for the rest."""
        response = await self.request(kind, "GET", url, ok=_ELSEWHERE_OK, credential=credential, max_body=max_body)
        return response.status_code, response.content

    def _count_retry(self, _error: HubError, _wait: float, _retry: int) -> None:
        self._stats.retries += 1

    def json(self, response: httpx.Response) -> Any:
        """The answer's JSON document, or HubProtocolError."""
        try:
            return json.loads(response.content)
        except (ValueError, RecursionError):
            # RecursionError: absurdly nested JSON. Unreadable like any other garbage, not a reason to crash.
            content_type = response.headers.get("content-type") or "no content type"
            raise HubProtocolError(
                self.redact(f"{_what(response.request)}: the answer is not JSON ({content_type})")
            ) from None

    async def _attempt(
        self,
        kind: str,
        request: httpx.Request,
        ok: frozenset[int],
        in_scope: bool,
        credential: str | None,
    ) -> httpx.Response:
        stats = self._stats
        limiter = self.limiter
        if self._transport_checkpoints:
            try:
                # acquire_nowait refuses while others wait, so no one jumps the queue.
                limiter.acquire_nowait()
            except trio.WouldBlock:
                await limiter.acquire()
        else:
            await limiter.acquire()
        timeout = self._timeout if in_scope else self._elsewhere_timeout
        try:
            stats.requests[kind] = stats.requests.get(kind, 0) + 1
            stats.in_flight += 1
            stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
            try:
                # A deadline for the whole attempt: connecting, sending and reading the complete answer.
                with trio.move_on_after(timeout) as deadline:
                    response = await self._send(request)
                if deadline.cancelled_caught:
                    raise HubTimeout(f"{_what(request)}: no answer within {timeout:g} s")
            except httpx.RequestError as error:
                redact = self._redactor(credential)
                if (
                    not in_scope
                    and isinstance(error, httpx.RemoteProtocolError)
                    and not isinstance(error, AnswerTooLarge)
                ):
                    # h11 quotes the bytes it refused: a user's server would write its own words into the
                    # culler's log lines and pages. Only the hub's malformed answers are quoted.
                    redact = _unquoted
                raise hub_error_from_httpx(error, _what(request), redact) from error
            finally:
                stats.in_flight -= 1
        finally:
            limiter.release()
        status = response.status_code
        if status in ok:
            return response
        # Only the hub is quoted: what a user's server says is its user's text, not an explanation.
        quoted = self._hub_message(response) if in_scope else ""
        message = self._redactor(credential)(f"{_what(request)} -> {status}{quoted}")
        if status in (401, 403):
            raise HubAuthError(message)
        if 300 <= status < 400:
            message += self._redirect_advice(request, response)
        raise HubStatusError(message, status=status, retry_after=_header_retry_after(response))

    def _redactor(self, credential: str | None) -> Callable[[str], str]:
        return self.redact if credential is None else make_redactor([*self._secrets, credential])

    async def _send(self, request: httpx.Request) -> httpx.Response:
        max_body = request.extensions.get(MAX_BODY_EXTENSION)
        transport = self._transport
        if transport is None:
            return await read_whole(await self._client.send(request, stream=True), max_body)
        if self._elsewhere is not None and not str(request.url).startswith(self._origin):
            transport = self._elsewhere
        # What AsyncClient.send does for a client without auth, redirects, hooks or cookies: the transport's
        # answer, read in full. Skipping the client's machinery (cookie extraction, the auth and redirect
        # generators) saves much of the CPU of a request over the h11 transport (benchmarks/request_cost.py).
        response = await transport.handle_async_request(request)
        response.request = request
        if self._transport_checkpoints:
            return response  # read (within max_body) and closed by the transport
        return await read_whole(response, max_body)

    def _hub_message(self, response: httpx.Response) -> str:
        try:
            model = json.loads(response.content)
        except (ValueError, RecursionError):
            return ""
        message = model.get("message") if isinstance(model, dict) else None
        if not isinstance(message, str):
            return ""
        # Redact before cutting: a cut through the token would leave a prefix no redactor could recognise.
        return f": {self.redact(message)[:QUOTE_LIMIT]}"

    def _redirect_advice(self, request: httpx.Request, response: httpx.Response) -> str:
        location = self.redact(response.headers.get("location", ""))[:QUOTE_LIMIT]
        advice = f" (the hub answered with a redirect{f' to {location}' if location else ''}"
        if str(request.url).startswith(self.base) and not self.base.endswith("/api"):
            # The classic mistake: --url=http://hub:8081/hub, whose / redirects to the login page.
            advice += f"; --url must be the hub's API URL, e.g. {suggest_api_url(self.base, location)}"
        return advice + ")"


def _unquoted(_text: str) -> str:
    """What is said of a malformed answer from outside the hub's API, instead of what it held."""
    return "the answer is not HTTP/1.1 the culler can read (what the server sent is not quoted)"


def _what(request: httpx.Request) -> str:
    """How error messages name a request; built only when one is needed."""
    return f"{request.method} {request.url}"


async def read_whole(response: httpx.Response, max_body: int | None) -> httpx.Response:
    """A streamed answer (a transport other than ours) read in full, within ``max_body`` bytes, and closed."""
    try:
        if max_body is None:
            await response.aread()
            return response
        refuse_encoded(response, max_body)
        try:
            content = bytearray(response.content)  # already in memory (a response made from bytes)
        except httpx.ResponseNotRead:
            content = await _read_raw(response, max_body)
        if len(content) > max_body:
            raise AnswerTooLarge(f"the answer's body is longer than {max_body} bytes")
        return httpx.Response(
            response.status_code, headers=response.headers, content=bytes(content), request=response.request
        )
    finally:
        await response.aclose()


async def _read_raw(response: httpx.Response, max_body: int) -> bytearray:
    """The streamed body, or its first ``max_body`` bytes and one chunk more."""
    content = bytearray()
    chunks = response.aiter_raw()
    try:
        async for chunk in chunks:
            content += chunk
            if len(content) > max_body:
                break
    finally:
        if len(content) > max_body:
            # Leaving the stream half read leaves httpx's and httpcore's generators under it suspended, and trio
            # warns when they are collected. With the connection closed, the next read ends every one of them.
            await response.aclose()
            with contextlib.suppress(httpx.HTTPError, httpx.StreamError):
                async for _chunk in chunks:
                    pass
    return content


_ELSEWHERE_OK: Final = frozenset(status for status in range(100, 500) if status != 429)
_IDEMPOTENT: Final = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


def _retryable(error: HubError) -> bool:
    return error.transient


def _retryable_unless_timeout(error: HubError) -> bool:
    return error.transient and not isinstance(error, HubTimeout)


def _retry_after(error: HubError) -> float | None:
    return error.retry_after if isinstance(error, HubStatusError) else None


def _nothing_asked(_error: HubError) -> float | None:
    return None


def _header_retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP-date: rare from a hub; the ordinary backoff applies
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


@asynccontextmanager
async def open_request_engine(
    config: Config, *, transport: httpx.AsyncBaseTransport | None = None
) -> AsyncIterator[RequestEngine]:
    """A RequestEngine for ``config``; ``transport`` replaces the network (e.g. FakeHub's MockTransport) and
    stays its caller's to close."""
    header_token(config.api_token)  # ConfigError now, before any request, for a token no header can carry
    limiter = trio.CapacityLimiter(config.concurrency or math.inf)
    ssl_context = make_ssl_context(config)
    injected = transport is not None
    connections = config.concurrency or None
    elsewhere: TrioH11Transport | None = None
    if transport is None and not config.use_proxy_env:
        # Idle connections to keep: as many as can be in flight at once (the limiter), within reason.
        idle = min(connections or 64, 256)
        transport = TrioH11Transport(ssl_context=ssl_context, max_idle_per_origin=idle)
        if ssl_context is not None:
            # Other origins (the proxy's public side) have certificates from the system's CAs, not the hub's
            # internal one: a transport of their own, with the default TLS context.
            elsewhere = TrioH11Transport(max_idle_per_origin=idle)
    client = http_client(
        config, timeout=config.request_timeout, tls=ssl_context, transport=transport, connections=connections
    )
    try:
        # With --use-proxy-env httpx's client routes each request by the environment's proxy settings; otherwise
        # there is one transport, which the engine uses directly.
        yield RequestEngine(config, client, limiter, transport=transport, elsewhere=elsewhere)
    finally:
        if elsewhere is not None:
            await elsewhere.aclose()
        if not injected:
            await client.aclose()  # and with it the transport it was given or built


def _then(check: Callable[[], Awaitable[None]]) -> Callable[[float], Awaitable[None]]:
    """A wait before a retry that ends with ``check``."""

    async def wait_then_check(seconds: float) -> None:
        await trio.sleep(seconds)
        await check()

    return wait_then_check
