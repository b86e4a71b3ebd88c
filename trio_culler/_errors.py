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
