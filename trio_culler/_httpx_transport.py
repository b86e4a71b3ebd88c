"""The hub transport over httpx: an injected ``httpx.AsyncBaseTransport`` (``FakeHub``'s in-memory
``MockTransport`` in tests and embeddings) or httpx's own client (``--use-proxy-env``: proxies are httpx's
business). httpx's exception tree becomes the :class:`TransportError` kinds the pool raises, so the hub client
has one error path whatever carries its requests.

A module of its own so that httpx (about 70 ms to import) is loaded only when one of these is asked for.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable

import httpx

from ._config import Config
from ._errors import caused_by, describe_exception
from ._http11 import RawResponse, TransportError
from ._transport import AnswerUnreadable, Headers, TransportTimeout

__all__ = ["HttpxTransport", "proxy_client"]


class HttpxTransport:
    """Requests through an httpx transport or client's ``send``; httpx's exceptions become ours."""

    def __init__(
        self,
        base_url: str,
        headers: Headers,
        send: Callable[[httpx.Request], Awaitable[httpx.Response]],
    ) -> None:
        self._base = base_url.rstrip("/")
        self._headers = list(headers)
        self._send = send

    async def request(self, method: str, target: str, headers: Headers, body: bytes) -> RawResponse:
        return await self.request_url(method, self._base + target, headers, body)

    async def request_url(self, method: str, url: str, headers: Headers, body: bytes) -> RawResponse:
        request = httpx.Request(method, url, headers=[*self._headers, *headers], content=body or None)
        try:
            response = await self._send(request)
            response.request = request  # as httpx.AsyncClient does; httpx's error messages quote it
            try:
                await response.aread()
            finally:
                await response.aclose()
        except httpx.TimeoutException as error:
            raise TransportTimeout(f"{type(error).__name__}: {describe_exception(error)}") from None
        except httpx.TransportError as error:
            failed = TransportError(f"{type(error).__name__}: {describe_exception(error)}")
            # The hub's certificate does not verify against the CA: trying again cannot change that.
            failed.retryable = not caused_by(error, ssl.SSLCertVerificationError)
            raise failed from None
        except httpx.RequestError as error:
            # E.g. a Content-Encoding the body does not match: an answer we cannot read, like bad JSON.
            raise AnswerUnreadable(str(error)) from None
        headers_seen = [(name.lower(), value) for name, value in response.headers.raw]
        return RawResponse(response.status_code, headers_seen, response.content)

    async def aclose(self) -> None:
        """Nothing to close: whoever passed the transport or client owns it (and closes it)."""


def proxy_client(config: Config, ssl_context: ssl.SSLContext | None) -> httpx.AsyncClient:
    """httpx's client with ``trust_env``: HTTP(S)_PROXY, NO_PROXY and their authentication. Its pool must have
    room for every limiter token, or the surplus would fail with PoolTimeout."""
    connections = config.concurrency + 2 if config.concurrency else None
    return httpx.AsyncClient(
        timeout=httpx.Timeout(config.request_timeout),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        trust_env=True,
        verify=ssl_context or True,
        follow_redirects=False,
    )
