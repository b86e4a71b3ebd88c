"""The hub's plain requests, built without httpx's URL parser and request encoder.

A pass that stops 20,000 servers sends 20,000 ``DELETE /users/{name}/server``: ``httpx.URL`` spends about 11 us
validating each URL character by character (and the hub's host as an IP address), and ``httpx.Request`` about
8 us encoding an empty body and working out the Host header, together a tenth of the CPU a stop costs
(benchmarks/RESULTS.md). Here the parts every such request shares are worked out once, by httpx itself, when
the engine starts:

- the URL: the API's parsed URL with the request's path appended. Only a path httpx would leave exactly as
  written qualifies (:data:`_PLAIN_PATH`: unreserved characters, well-formed percent escapes and slashes, no
  query and no dot-segment); anything else goes through ``httpx.URL`` as before;
- the request: the hub's headers with the Host header httpx would add in front, and an empty body, for the
  methods httpx sends without a ``Content-Length`` (GET, DELETE, HEAD).

The URL is an ``httpx.URL`` whose parsed form (httpx's ``ParseResult``, a named tuple) is the API's with its
path replaced: this leans on httpx's internals, pinned to 0.28.x in pyproject.toml. :func:`fast_targets`
checks at start-up that a URL built so equals the one httpx parses, and returns None (every request then
takes httpx's own way) if this httpx version differs; ``tests/test_fast_request.py`` holds both ways equal for
any path the hub client can build.
"""

from __future__ import annotations

import re
from typing import Any, Final

import httpx

__all__ = ["FastTargets", "fast_targets"]

#: A path httpx keeps byte for byte: RFC 3986 unreserved characters, slashes and well-formed percent escapes
#: (what ``_hub.quote_segment`` produces), and no dot-segment (``/.`` starts every one; a name beginning with a
#: dot merely takes the ordinary way).
_PLAIN_PATH: Final = re.compile(r"(?:[A-Za-z0-9\-_.~/]|%[0-9A-Fa-f]{2})*")
#: The methods httpx sends without a body or Content-Length when given no content.
_BODYLESS: Final = frozenset({"GET", "DELETE", "HEAD"})
_NO_BODY: Final = httpx.ByteStream(b"")


class FastTargets:
    """URLs and requests under one parsed API URL; see the module docstring. Make it with :func:`fast_targets`."""

    def __init__(self, api: httpx.URL, headers: httpx.Headers) -> None:
        self._api = api
        self._parsed: Any = api._uri_reference
        self._prefix: str = self._parsed.path.rstrip("/")
        self._netloc = api.netloc
        self._headers = httpx.Headers([(b"Host", api.netloc), *headers.raw])

    def url(self, path: str) -> httpx.URL | None:
        """The API's URL with ``path`` (starting with ``/``) appended, or None when httpx must parse it."""
        if not path.startswith("/") or "/." in path or not _PLAIN_PATH.fullmatch(path):
            return None
        url = httpx.URL.__new__(httpx.URL)
        url._uri_reference = self._parsed._replace(path=self._prefix + path, query=None, fragment=None)
        return url

    def request(self, method: str, url: httpx.URL, extensions: dict[str, Any]) -> httpx.Request | None:
        """A bodiless request to ``url`` with the API's headers, or None when httpx must encode it (a method
        that carries a Content-Length, or a URL of another host than the API's)."""
        if method not in _BODYLESS or url.netloc != self._netloc:
            return None
        request = httpx.Request(method, url, headers=self._headers, stream=_NO_BODY, extensions=extensions)
        # Read now, synchronously, as httpx reads a body it encodes itself: the transport's ``aread`` would
        # otherwise iterate an async generator per request, which trio then has to finalize, at a cost of its own.
        request.read()
        return request


def fast_targets(api_url: str, headers: httpx.Headers) -> FastTargets | None:
    """FastTargets under ``api_url``, or None when this httpx builds URLs or requests another way than the one
    FastTargets copies (checked on a sample: the URL's parts, and the request's headers on the wire)."""
    api = httpx.URL(api_url)
    try:
        fast = FastTargets(api, headers)
        path = "/users/%C3%A9-x_1.~/server"
        built = fast.url(path)
        expected = httpx.URL(str(api).rstrip("/") + path)
        if built is None or (built.raw_path, str(built), built.netloc) != (
            expected.raw_path,
            str(expected),
            expected.netloc,
        ):
            return None
        request = fast.request("DELETE", built, {})
        reference = httpx.Request("DELETE", expected, headers=headers)
        if request is None or request.headers.raw != reference.headers.raw or request.read() != reference.read():
            return None
    except (AttributeError, TypeError, ValueError):
        return None
    return fast
