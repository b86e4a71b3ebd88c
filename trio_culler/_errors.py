"""The exceptions trio_culler raises.

::

    CullerError
    ├── ConfigError            bad option, value or config file (the CLI exits 2)
    └── HubError               anything that went wrong talking to the hub
        ├── HubUnavailable     could not connect, or the connection broke (transient)
        ├── HubTimeout         no complete answer within the request deadline (transient)
        ├── HubAuthError       401/403: the token is wrong or lacks scopes (not retried within a pass)
        ├── HubStatusError     an HTTP status the culler did not expect (5xx and 429 are transient)
        └── HubProtocolError   an answer the culler could not read (not JSON, wrong shape)

Messages never contain the API token: they are built from the method, the URL and the status only.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "CullerError",
    "HubAuthError",
    "HubError",
    "HubProtocolError",
    "HubStatusError",
    "HubTimeout",
    "HubUnavailable",
    "caused_by",
    "describe_exception",
    "first_leaf",
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
