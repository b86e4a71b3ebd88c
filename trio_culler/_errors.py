"""The exceptions trio_culler raises, and the one place where httpx's become them.

::

    CullerError
    ├── ConfigError            bad option, value or config file (the CLI exits 2)
    └── HubError               anything that went wrong talking to the hub
        ├── HubUnavailable     could not connect, or the connection broke (transient, except a TLS failure
        │                      that trying again cannot change: a rejected certificate, TLS against plain HTTP)
        ├── HubTimeout         no complete answer within the request deadline (transient)
        ├── HubAuthError       401/403: the token is wrong or lacks scopes (not retried within a pass)
        ├── HubStatusError     an HTTP status the culler did not expect (5xx and 429 are transient)
        └── HubProtocolError   an answer the culler could not read (not JSON, wrong shape, bad content coding)

The layer below is httpx, whatever transport carries the request (``_transport``'s h11 one, httpcore with
``--use-proxy-env``, a ``MockTransport`` in tests); :func:`hub_error_from_httpx` maps its tree once::

    TLSHandshakeTimeout (an httpx.ConnectTimeout)        -> HubUnavailable (not retried: see _tls_advice)
    httpx.TimeoutException                              -> HubTimeout
    AnswerTooLarge (an httpx.RemoteProtocolError)        -> HubProtocolError (not retried: the same next time)
    httpx.TransportError (connect, read, write, protocol) -> HubUnavailable
    httpx.DecodingError and any other httpx.RequestError  -> HubProtocolError

Messages never contain the API token: the hub client builds them from the method, the URL and the status, and
passes anything quoted from the hub or an exception through its redactor first (then cuts it to length). The
httpx exception a HubError is raised from is redacted the same way, so a traceback shows no token either.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

import httpx

__all__ = [
    "AnswerTooLarge",
    "ConfigError",
    "CullerError",
    "HubAuthError",
    "HubError",
    "HubProtocolError",
    "HubStatusError",
    "HubTimeout",
    "HubUnavailable",
    "TLSHandshakeTimeout",
    "caused_by",
    "describe_exception",
    "first_leaf",
    "hub_error_from_httpx",
]


class CullerError(Exception):
    """Base class of every error trio_culler raises on purpose."""


class ConfigError(CullerError):
    """An option, value or config file that cannot be used. The message names the option."""


class HubError(CullerError):
    """A request to the hub failed. ``kind`` is a short stable label used in reports and metrics."""

    kind = "hub"
    #: Whether trying the same request again, a little later, may succeed.
    transient = False


class HubUnavailable(HubError):
    kind = "unavailable"
    transient = True


class HubTimeout(HubError):
    kind = "timeout"
    transient = True


class HubAuthError(HubError):
    kind = "auth"


class HubStatusError(HubError):
    kind = "status"

    def __init__(self, message: str, *, status: int, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        # 429 and the 5xx family are what a hub under load or restarting answers; the rest is final.
        self.transient = status == 429 or status >= 500


class HubProtocolError(HubError):
    kind = "protocol"


class TLSHandshakeTimeout(httpx.ConnectTimeout):
    """Raised by the transport when a TLS handshake does not complete in a few seconds: what a plain-HTTP server
    does with a TLS greeting (JupyterHub's tornado waits for the end of a request head that never comes)."""


class AnswerTooLarge(httpx.RemoteProtocolError):
    """Raised while reading an answer longer than the request's cap (or compressed, so that its bytes on the
    wire say nothing of its size): an answer the culler will not read, now or on a retry."""


def first_leaf(group: BaseExceptionGroup[Exception]) -> BaseException:
    """The first exception inside possibly nested groups: nurseries nest them, and each of the tasks that hit
    the same refusal says the same thing."""
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf


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


def describe_exception(error: BaseException) -> str:
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


def caused_by(error: BaseException, kind: type[BaseException]) -> bool:
    return any(isinstance(link, kind) for link in _chain(error))


#: How much of a message quoted from the hub or an exception is kept, after redaction.
QUOTE_LIMIT = 300
#: The end-of-stream kinds of TLS failure: a hub that is restarting causes them, so they are worth a retry.
_TLS_EOF = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)


def hub_error_from_httpx(error: httpx.RequestError, what: str, redact: Callable[[str], str]) -> HubError:
    """The HubError for what httpx raised while ``what`` (e.g. ``GET http://hub/hub/api/``) was under way.

    The message is redacted first, then cut: a cut through the token would leave a prefix no redactor could
    recognise. ``error`` itself (and what it was raised from) is redacted in place, since the caller raises the
    HubError from it and a traceback would show it.
    """
    for link in _chain(error):
        if link.args and any(isinstance(arg, str) for arg in link.args):
            link.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in link.args)
    detail = redact(describe_exception(error))[:QUOTE_LIMIT]
    mapped: HubError
    if isinstance(error, httpx.TimeoutException) and not isinstance(error, TLSHandshakeTimeout):
        mapped = HubTimeout(f"{what}: {detail}")
    elif isinstance(error, AnswerTooLarge):
        mapped = HubProtocolError(f"{what}: unreadable answer: {detail}")
    elif isinstance(error, httpx.TransportError):
        advice = _tls_advice(error, what)
        mapped = HubUnavailable(f"{what}: {detail}{advice}")
        # A certificate that does not verify, TLS spoken to a plain-HTTP port, a request that cannot be sent:
        # the same a second later, so say it now rather than after the retries' backoff.
        tls_failure = next((link for link in _chain(error) if isinstance(link, ssl.SSLError)), None)
        if isinstance(error, TLSHandshakeTimeout | httpx.UnsupportedProtocol | httpx.LocalProtocolError) or (
            tls_failure is not None and not isinstance(tls_failure, _TLS_EOF)
        ):
            mapped.transient = False
    else:
        mapped = HubProtocolError(f"{what}: unreadable answer: {detail}")
    return mapped


def _tls_advice(error: httpx.TransportError, what: str) -> str:
    """A hint for the TLS failures that are usually a wrong --url or a missing --ssl-enabled."""
    if "https://" not in what:
        return ""
    if caused_by(error, ssl.SSLCertVerificationError):
        return " (the hub's certificate does not verify: with internal_ssl use --ssl-enabled, else check its CA)"
    if isinstance(error, TLSHandshakeTimeout) or caused_by(error, ssl.SSLError):
        plain = what.split(" ", 1)[-1].replace("https://", "http://", 1)
        return (
            " (the TLS handshake failed: if the hub serves plain HTTP on this port, "
            f"use an http:// --url, e.g. {plain})"
        )
    return ""
