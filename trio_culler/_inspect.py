"""Asking a single-user server what it is doing: its kernels and terminals, through the proxy.

The hub's ``last_activity`` is wrong in two ways: a kernel running a silent cell sends nothing, so the
hub sees an idle server; a forgotten browser tab polls its server through the proxy, so the hub sees an active one.
jupyter_server knows better: ``GET <server>/api/kernels`` gives each kernel's ``execution_state`` and
``last_activity``, ``GET <server>/api/terminals`` each terminal's ``last_activity``, and ``GET <server>/api/status``
the server's own ``last_activity`` (its user's API requests, kernels and terminals: what the single-user server
reports to the hub itself, and what the culler's untracked requests never move, unlike the proxy's record).

This module asks and reads the answers into plain frozen values (:class:`ServerActivity`); it never decides.
``_decide`` reads them. Anything that goes wrong gives an :class:`InspectionFailed` with a ``kind`` (``timeout``,
``unreachable``, ``forbidden``, ``not_found``, ``status``, ``unreadable``) and the server is then decided from the
hub's data alone: a server that could not be inspected is never culled *because* of what we failed to read.

Where a server is reached: the hub's ``full_url`` for it when the hub has a ``public_url`` (it then builds every
server's full URL itself, subdomains included), else the culler's ``--public-url`` joined with the server's
``url`` path. Each path segment the culler adds is fixed text, and the hub's ``url`` is kept as the hub
percent-encoded it.

A server runs its user's code, so what it answers is hostile input: the caller's ``fetch`` reads at most
:data:`MAX_ANSWER_BYTES` within a deadline of its own (``_http``), and this module reads that into at most
:data:`MAX_ITEMS` kernels or terminals, refusing anything that is not a list of objects before structuring any
of it, and stopping at the first item it cannot read.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, TypeVar
from urllib.parse import quote, urlsplit

import attrs
import cattrs

from ._models import Server, strict_hook, timestamp_hook

if TYPE_CHECKING:
    from ._config import Policy

__all__ = [
    "ACCESS_SCOPE",
    "MAX_ANSWER_BYTES",
    "MAX_ITEMS",
    "Fetch",
    "InspectionFailed",
    "Kernel",
    "ServerActivity",
    "Terminal",
    "encode_path",
    "inspect_server",
    "inspected_every_pass",
    "parse_kernels",
    "parse_status",
    "parse_terminals",
    "reported_time",
    "server_base_url",
]

#: The scope of the token a server is shown (its user's own, for that server alone: see ``_credentials``).
ACCESS_SCOPE = "access:servers"


def inspected_every_pass(server: Server, policy: Policy) -> bool:
    """Whether ``--inspect-kernels`` reads this server at every pass, whatever the hub's data says: with
    --kernel-activity-only the hub's activity says nothing about idleness, so every ready server (none
    pending) may be culled by its kernels. The pager sends each such server to a worker, and leaves its
    forecast to that worker."""
    return policy.kernel_activity_only and server.is_ready and not server.pending


@attrs.frozen
class Kernel:
    id: str
    #: ``idle``, ``busy``, ``starting``, ``dead``, ...: only ``busy`` means a computation is running.
    execution_state: str
    #: When the kernel last sent or received a message; for a busy kernel, when its current cell started.
    last_activity: datetime | None = None

    @property
    def busy(self) -> bool:
        return self.execution_state == "busy"


@attrs.frozen
class Terminal:
    name: str
    last_activity: datetime | None = None


@attrs.frozen
class ServerActivity:
    """What a server said about itself. Empty sequences mean "no kernel", "no terminal"."""

    kernels: Sequence[Kernel] = ()
    terminals: Sequence[Terminal] = ()
    #: When its user last asked to keep it (trio-culler-notice's "Keep running"), which is activity too; the
    #: judge adds it (``_judge``), the server's kernels API never says it.
    kept_at: datetime | None = None
    #: The server's own last activity (``api/status``), on the hub's clock's terms: the judge counts it when it is
    #: later than the hub's ``last_activity`` (``_judge``). None: not asked, or not readable (``report_unread``).
    reported_at: datetime | None = None
    #: Asked, and no time could be read from the answer (counted, never acted on).
    report_unread: bool = False

    @property
    def busy_since(self) -> datetime | None:
        """When the most recent of the busy kernels started its current work (None: no busy kernel, or only busy
        kernels without a timestamp; see :attr:`busy`)."""
        times = [k.last_activity for k in self.kernels if k.busy and k.last_activity is not None]
        return max(times) if times else None

    @property
    def busy(self) -> bool:
        return any(kernel.busy for kernel in self.kernels)

    @property
    def last_activity(self) -> datetime | None:
        """The newest activity of any kernel, terminal or keep; None when there is none (or none has a timestamp)."""
        times = [kernel.last_activity for kernel in self.kernels if kernel.last_activity is not None]
        times += [terminal.last_activity for terminal in self.terminals if terminal.last_activity is not None]
        if self.kept_at is not None:
            times.append(self.kept_at)
        return max(times) if times else None


class InspectionFailed(Exception):
    """A server that could not be inspected. ``kind`` groups the failures for logs and metrics."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# -- reading the answers ------------------------------------------------------------------------------------

#: Most bytes of an answer read from a server. jupyter_server describes a kernel in about 200 bytes, so this is
#: room for :data:`MAX_ITEMS` kernels and more; a longer answer is not read at all (``unreadable``).
MAX_ANSWER_BYTES: Final = 256 * 1024
#: Most kernels, and most terminals, read from one server. A user runs a handful; a server that lists more is
#: not telling the truth about anything the culler needs.
MAX_ITEMS: Final = 1000


def _make_converter() -> cattrs.Converter:
    # The single-user server boundary has its own converter: its models are not the hub's. Unknown keys are
    # allowed (jupyter_server adds fields: connections, reason, ...); values are read as strictly as the hub's
    # (_models' hooks: a wrong type is refused, never coerced). No detailed validation: the first error ends the
    # reading, rather than a report of every error in a long list the server made up.
    converter = cattrs.Converter(forbid_extra_keys=False, detailed_validation=False)
    converter.register_structure_hook(str, strict_hook(str))
    converter.register_structure_hook(datetime | None, timestamp_hook)
    return converter


_CONVERTER = _make_converter()

_Item = TypeVar("_Item", "Kernel", "Terminal")


def _read_list(body: bytes, item: type[_Item], what: str) -> list[_Item]:
    """A server's answer as a list of ``item``, read within bounds; the first thing wrong ends the reading.

    Bytes, then items, then each item's shape are checked before anything is structured, so that a hostile
    answer costs at most :data:`MAX_ANSWER_BYTES` of JSON decoding and :data:`MAX_ITEMS` small objects."""
    if len(body) > MAX_ANSWER_BYTES:
        raise InspectionFailed("unreadable", f"{what}: the answer is longer than {MAX_ANSWER_BYTES} bytes")
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        raise InspectionFailed("unreadable", f"{what}: the answer is not JSON") from None
    if type(value) is not list:
        raise InspectionFailed("unreadable", f"{what}: expected a list, got {type(value).__name__}")
    if len(value) > MAX_ITEMS:
        raise InspectionFailed("unreadable", f"{what}: more than {MAX_ITEMS} items")
    for index, model in enumerate(value):
        if type(model) is not dict:
            raise InspectionFailed("unreadable", f"{what}[{index}]: expected an object, got {type(model).__name__}")
    read: list[_Item] = []
    for index, model in enumerate(value):
        try:
            read.append(_CONVERTER.structure(model, item))
        except KeyError as error:
            raise InspectionFailed("unreadable", f"{what}[{index}]: no {error.args[0]!r}") from None
        except TypeError as error:
            raise InspectionFailed("unreadable", f"{what}[{index}]: {error}"[:300]) from None
        except ValueError:
            # A timestamp that does not parse; datetime's message would quote it, and the text is the server's
            # (its user's words in the culler's log lines and pages).
            raise InspectionFailed("unreadable", f"{what}[{index}]: a timestamp that cannot be read") from None
    return read


def parse_kernels(body: bytes) -> list[Kernel]:
    """``GET api/kernels`` -> kernels, or :class:`InspectionFailed` (kind ``unreadable``)."""
    return _read_list(body, Kernel, "kernels")


def parse_terminals(body: bytes) -> list[Terminal]:
    """``GET api/terminals`` -> terminals, or :class:`InspectionFailed` (kind ``unreadable``)."""
    return _read_list(body, Terminal, "terminals")


#: Most characters of a time a server reports (``2026-12-06T13:40:12.503118+00:00`` is 32).
MAX_TIME_TEXT: Final = 40
#: Most bytes of ``api/status``'s answer read (jupyter_server's is about 150).
MAX_STATUS_BYTES: Final = 4096


def reported_time(value: object) -> datetime | None:
    """A time a server reports about itself (ISO 8601 with a zone, as jupyter_server and trio-culler-notice
    write it), in UTC; None for anything else. Never raises, and never quotes the text: it is the server's."""
    if type(value) is not str or len(value) > MAX_TIME_TEXT:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return None if moment.utcoffset() is None else moment.astimezone(UTC)


def parse_status(body: bytes) -> datetime | None:
    """``GET api/status`` -> the server's own ``last_activity``, or None when the answer holds none that can be
    read (a few KiB read at most)."""
    if len(body) > MAX_STATUS_BYTES:
        return None
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return reported_time(value.get("last_activity")) if type(value) is dict else None


# -- asking -------------------------------------------------------------------------------------------------

#: GET one absolute URL (``_http.RequestEngine.get_elsewhere``: bounded, no culler's token); ``(status, body)``.
#: Raises :class:`InspectionFailed` when no answer came (timeout, connection refused, ...).
Fetch = Callable[[str], Awaitable[tuple[int, bytes]]]


def server_base_url(server: Server, public_url: str | None) -> str | None:
    """Where ``server`` answers, ending in ``/``: the hub's ``full_url``, else ``public_url``'s origin + the
    server's path. None when neither is known (then the server cannot be inspected)."""
    full_url = server.model.get("full_url") if isinstance(server.model, dict) else None
    if isinstance(full_url, str) and full_url.startswith(("http://", "https://")):
        parts = urlsplit(full_url)
        origin, path = f"{parts.scheme}://{parts.netloc}", parts.path
    elif public_url and server.url and server.url.startswith("/"):
        # The server's url is the absolute path the proxy routes (`/user/alice/`), which already holds the hub's
        # base_url (`/jupyter/user/alice/`): keep only the public URL's origin.
        parts = urlsplit(public_url)
        origin, path = f"{parts.scheme}://{parts.netloc}", server.url
    else:
        return None
    path = encode_path(path)
    return origin + (path if path.endswith("/") else path + "/")


def encode_path(path: str) -> str:
    """A URL path safe to request whatever the names in it: escapes the hub made are kept, anything else that
    could change the request's meaning is percent-encoded (``?``, ``#``, spaces, non-ASCII), and a segment that
    is only ``.`` or ``..`` is encoded so that no client or proxy removes it (user ``..`` must not turn
    ``/user/../api/kernels`` into another route)."""
    segments = []
    for segment in path.split("/"):
        if segment in (".", ".."):
            segments.append(segment.replace(".", "%2E"))
        else:
            segments.append(quote(segment, safe="%!$&'()*+,;=:@~-._"))
    return "/".join(segments)


def _check_status(status: int, what: str) -> None:
    if status == 200:
        return
    if status == 403:
        raise InspectionFailed(
            "forbidden", f"{what}: 403 Forbidden; the server refused its user's own token with {ACCESS_SCOPE} for it"
        )
    if status == 404:
        raise InspectionFailed("not_found", f"{what}: 404 Not Found (not a jupyter_server, or the server is gone)")
    if status in (301, 302, 303, 307, 308):
        # A redirect to a login page: the proxy routes to something that does not accept the token.
        raise InspectionFailed(
            "forbidden", f"{what}: redirected ({status}); it did not take its user's {ACCESS_SCOPE} token"
        )
    raise InspectionFailed("status", f"{what}: unexpected status {status}")


async def inspect_server(
    server: Server, *, public_url: str | None, fetch: Fetch, terminals: bool = True, status: bool = False
) -> ServerActivity:
    """Ask ``server`` for its kernels, (with ``terminals``) its terminals and (with ``status``) its own last
    activity. Raises :class:`InspectionFailed`, never acts. Terminals have no busy state, so only idleness
    measured from activity needs them (``--kernel-activity-only``); the server's own last activity is on the
    hub's clock's terms, which only the other rules read. A status that cannot be had or read fails nothing: it
    is ``report_unread``, and the judgment goes on without it."""
    base = server_base_url(server, public_url)
    if base is None:
        raise InspectionFailed("unreachable", "no full_url from the hub and no --public-url: cannot reach the server")
    # `no_track_activity`: jupyter_server then does not count the culler's own request as the user's activity
    # (which the server would report to the hub). The proxy still records the request; see the README.
    code, body = await fetch(base + "api/kernels?no_track_activity=1")
    _check_status(code, "GET api/kernels")
    activity = ServerActivity(tuple(parse_kernels(body)))
    if status:
        activity = await _read_status(base, fetch, activity)
    if not terminals:
        return activity
    code, body = await fetch(base + "api/terminals?no_track_activity=1")
    if code == 404:
        # jupyter_server without terminals (terminado not installed, or terminals disabled): no terminal at all.
        return activity
    _check_status(code, "GET api/terminals")
    return attrs.evolve(activity, terminals=tuple(parse_terminals(body)))


async def _read_status(base: str, fetch: Fetch, activity: ServerActivity) -> ServerActivity:
    """``activity`` with the server's own last activity. jupyter_server never counts ``api/status`` as activity;
    the answer is read like the others (the fetch's byte cap and deadline), and a failure of any kind only
    leaves the time unread: the kernels were read, and the judgment goes on from them and the hub's data."""
    try:
        code, body = await fetch(base + "api/status")
    except InspectionFailed:
        return attrs.evolve(activity, report_unread=True)
    moment = parse_status(body) if code == 200 else None
    return attrs.evolve(activity, reported_at=moment, report_unread=moment is None)
