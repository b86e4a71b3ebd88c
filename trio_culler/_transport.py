"""How the hub client's requests reach the hub: one small interface, two implementations.

- :class:`PoolTransport`, the default: requests encoded once as bytes and sent over the keep-alive pool in
  ``_http11`` (see there for why it exists).
- ``_httpx_transport.HttpxTransport``: any ``httpx.AsyncBaseTransport`` (``FakeHub``'s in-memory ``MockTransport`` in
  tests and embeddings) or httpx's own client (``--use-proxy-env``: proxies are httpx's business). It maps
  httpx's exception tree onto the same :class:`TransportError` kinds the pool raises, so the hub client has
  one error path whatever carries its requests.

A transport is built for one hub: the base URL (``--url``) and the fixed headers (token, user agent) are given
once; each request then names only the method, the target below the base (already percent-encoded), the
headers particular to it, and its body.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Protocol
from urllib.parse import quote, urlsplit

from ._http11 import ConnectionPool, Origin, RawResponse, TransportError, encode_request

__all__ = [
    "AnswerUnreadable",
    "HubTransport",
    "PoolTransport",
    "TransportTimeout",
]

Headers = Sequence[tuple[str, str]]


class TransportTimeout(TransportError):
    """httpx gave up waiting (its own per-read timeouts; the hub client's deadline is separate)."""


class AnswerUnreadable(TransportError):
    """An answer arrived but could not be decoded (e.g. a Content-Encoding its body does not match)."""

    retryable = False


class HubTransport(Protocol):
    async def request(self, method: str, target: str, headers: Headers, body: bytes) -> RawResponse:
        """Send one request to ``base URL + target``; the complete answer or :class:`TransportError`."""
        ...

    async def request_url(self, method: str, url: str, headers: Headers, body: bytes) -> RawResponse:
        """Send one request to an absolute ``url`` (already percent-encoded) on another origin, with the same
        fixed headers (``--inspect-kernels``: a single-user server through the proxy)."""
        ...

    async def aclose(self) -> None: ...


class PoolTransport:
    """The default transport: HTTP/1.1 over ``_http11.ConnectionPool``."""

    def __init__(self, base_url: str, headers: Headers, *, ssl_context: ssl.SSLContext | None = None) -> None:
        # Config checked the URL: http(s), a host, a valid port, no query, fragment or spaces.
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"not a base URL: {base_url}")
        host = parts.hostname.encode("idna").decode("ascii")
        default_port = 443 if parts.scheme == "https" else 80
        port = parts.port or default_port
        self._origin = Origin(parts.scheme, host, port)
        authority = f"[{host}]" if ":" in host else host
        if port != default_port:
            authority = f"{authority}:{port}"
        # Percent-encode what a URL path may not hold raw (non-ASCII), keep what is already encoded.
        self._prefix = quote(parts.path, safe="/%!$&'()*+,;=:@~-._").rstrip("/").encode("ascii")
        self._head = _header_lines([("Host", authority), *headers])
        self._fixed = list(headers)
        self.pool = ConnectionPool(ssl_context=ssl_context)
        # Other origins (the proxy's public side) have certificates from the system's CAs, not the hub's
        # internal one: a pool of their own, with the default TLS context.
        self._elsewhere = ConnectionPool()

    async def request(self, method: str, target: str, headers: Headers, body: bytes) -> RawResponse:
        head = self._head + _header_lines(headers) if headers else self._head
        data = encode_request(method.encode("ascii"), self._prefix + target.encode("ascii"), head, body)
        return await self.pool.request(self._origin, data, head_request=method == "HEAD")

    async def request_url(self, method: str, url: str, headers: Headers, body: bytes) -> RawResponse:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
            raise TransportError(f"not an http(s) URL: {url}")
        host = parts.hostname.encode("idna").decode("ascii")
        default_port = 443 if parts.scheme == "https" else 80
        port = parts.port or default_port
        authority = f"[{host}]" if ":" in host else host
        if port != default_port:
            authority = f"{authority}:{port}"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = _header_lines([("Host", authority), *self._fixed, *headers])
        data = encode_request(method.encode("ascii"), target.encode("ascii"), head, body)
        return await self._elsewhere.request(Origin(parts.scheme, host, port), data, head_request=method == "HEAD")

    async def aclose(self) -> None:
        await self.pool.aclose()
        await self._elsewhere.aclose()


def _header_lines(headers: Headers) -> bytes:
    lines = []
    for name, value in headers:
        # The hub client checked the token when it started; this catches a bug, not bad input.
        if not name.isascii() or not value.isascii() or any(c in name + value for c in "\r\n\0"):
            raise ValueError(f"refusing to send header {name!r}: it contains characters HTTP cannot carry")
        lines.append(f"{name}: {value}\r\n".encode("ascii"))
    return b"".join(lines)
