"""What a soak run records, as plain data: the oracle judges a :class:`Timeline` and nothing else.

Every time is Unix time in seconds (``time.time()``): the culler's JSON log lines carry wall-clock times, and the
harness, the hub and the culler share one machine and one clock. A server is named by its *key*, ``user/server``
(``user/`` for the default server), the same for every record.

Who writes what:

- the driver: :class:`Activity` (a request through the proxy that the user's server answered, a spawn), :class:`Busy`
  (a kernel running a silent cell), :class:`DriverStart` / :class:`DriverStop` (the user starting and stopping their
  own server), :class:`Vanished` (a server the hub no longer lists, with no stop seen);
- the fault front (between the culler and the hub): :class:`HubDelete`, every DELETE of a server the culler sent;
- the fault runner: :class:`Fault`, each with its start and end;
- the culler's own JSON log, read as it is written: :class:`CullIntent`, :class:`PassEnd`, :class:`Spare`,
  :class:`LogLine` (WARNING and above, and any line that is not JSON);
- the webhook receiver: :class:`WarningReceived`; the light server: :class:`Inspection`, :class:`NoticeSeen`;
- the monitor: :class:`Sample` (the culler's RSS, open FDs, trio tasks) and :class:`StatusProbe` (the status page).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = [
    "Activity",
    "Busy",
    "CullIntent",
    "DriverStart",
    "DriverStop",
    "Fault",
    "HubDelete",
    "Inspection",
    "LogLine",
    "NoticeSeen",
    "Params",
    "PassEnd",
    "Sample",
    "Spare",
    "StatusProbe",
    "Timeline",
    "Vanished",
    "WarningReceived",
    "server_key",
]

#: Fault kinds that act on the hub or the proxy as a whole (every server, every request of the culler).
GLOBAL_FAULTS = ("hub_restart", "proxy_restart", "hub_503", "race")
#: Fault kinds aimed at some servers (``Fault.targets`` holds their keys).
TARGETED_FAULTS = ("hang", "hostile")


def server_key(user: str, server: str = "") -> str:
    return f"{user}/{server}"


@dataclass(frozen=True)
class Params:
    """What the oracle must know of the run's configuration, and the slack it allows (all in seconds)."""

    timeout: float
    cull_every: float
    #: The hub's ``last_activity_interval``: how often it folds the proxy's record of traffic into its own.
    activity_interval: float
    warn_before: float
    long_timeout: float
    long_users: tuple[str, ...] = ()
    exempt_users: tuple[str, ...] = ()
    #: How late after the hub's scheduled poll an activity may still be folded in (the poll's own time, a busy
    #: event loop, the database commit).
    visibility_slack: float = 3.0
    #: An idle server counts as culled late past its timeout + ``cull_every`` + this (a pass's own duration, the
    #: time from the log line to the hub's answer).
    late_slack: float = 10.0
    #: A busy kernel's interval is trusted only this far inside its ends.
    busy_slack: float = 1.0
    #: ERROR lines up to this long after a fault's end are still its own (retries, backoff, the next pass).
    error_after: float = 60.0
    #: Status probes up to this long after a hub-side fault's end are excused (the page checks tokens with the
    #: hub at most once a minute).
    status_after: float = 75.0
    #: Resource samples before this many seconds into the run are warm-up, left out of the fits.
    warmup: float = 60.0
    max_rss_growth_mib: float = 16.0
    max_fd_growth: float = 8.0
    max_task_growth: float = 8.0
    #: Features switched on in this run (see soak_settings.FEATURES): some turn a measurement into an invariant.
    features: tuple[str, ...] = ()

    def timeout_for(self, key: str) -> float | None:
        """The limit the rules give this server; None for an exempt one."""
        user = key.split("/", 1)[0]
        if user in self.exempt_users:
            return None
        return self.long_timeout if user in self.long_users else self.timeout


@dataclass(frozen=True)
class Activity:
    """Something the hub will count as activity for ``key``: at the latest ``answered``, at the earliest ``sent``.

    ``kind``: ``ping`` (a request through the proxy, answered by the server), ``kernel`` (a kernel's websocket
    through the proxy), ``spawn`` (the hub sets last_activity when a spawn starts), ``route`` (the proxy sets a
    route's last_activity when the hub adds the route again after the proxy restarted), ``keep`` (the user asked
    to keep the server through the notice API: the culler reads it itself, the hub is not involved)."""

    key: str
    sent: float
    answered: float
    kind: str = "ping"


@dataclass(frozen=True)
class Busy:
    """A kernel of ``key`` running a silent cell from ``start`` (seen busy) to ``end`` (the cell's own length)."""

    key: str
    start: float
    end: float


@dataclass(frozen=True)
class DriverStart:
    key: str
    requested: float
    #: When the hub said it was ready (None: it never became ready).
    ready: float | None


@dataclass(frozen=True)
class DriverStop:
    key: str
    requested: float
    #: ``logout`` (the user stopped it), ``restart`` (stopped to start again), ``end`` (the run's end).
    why: str = "logout"


@dataclass(frozen=True)
class Vanished:
    """The hub stopped listing a server the driver thought running, and no stop of anyone explains it."""

    key: str
    time: float


@dataclass(frozen=True)
class HubDelete:
    """A DELETE of a server by the culler, as the front saw it: received at ``sent``, answered at ``answered``."""

    key: str
    sent: float
    answered: float
    status: int
    #: The front answered itself (an injected 503): the hub never saw this request.
    injected: bool = False


@dataclass(frozen=True)
class Fault:
    kind: str
    start: float
    end: float
    #: Server keys a targeted fault acts on (empty for a global one).
    targets: tuple[str, ...] = ()
    #: Anything else worth keeping: for ``hub_restart``, ``up_at`` (the hub answering again).
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CullIntent:
    """The culler's ``Culling server ...`` line: it is about to send the DELETE."""

    time: float
    key: str
    rule: str
    inactive_seconds: float | None = None


@dataclass(frozen=True)
class PassEnd:
    """The culler's one summary line per pass; the pass started ``duration`` seconds before ``time``."""

    time: float
    duration: float
    aborted: bool = False

    @property
    def started(self) -> float:
        return self.time - self.duration


@dataclass(frozen=True)
class Spare:
    """The culler kept a server its hub data would cull (``rule``: ``kernel_busy``), after asking the server
    through the proxy: the proxy counted that request as activity."""

    time: float
    key: str
    rule: str


@dataclass(frozen=True)
class LogLine:
    """A culler log line at WARNING or above, or a line that was not JSON (``level`` ``unparsed``)."""

    time: float
    level: str
    message: str
    event: str | None = None
    user: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class WarningReceived:
    """A POST to the webhook receiver. ``event`` is None for today's body (a warning without an event field)."""

    received: float
    key: str
    cull_at: float | None
    event: str | None = None
    id: str | None = None


@dataclass(frozen=True)
class Inspection:
    """The light server answered a request of the culler for ``key``'s kernels or terminals."""

    time: float
    key: str
    #: ``normal``, or the hostile answer it got: ``huge``, ``items``, ``nonjson``, ``drip``, ``deep``.
    answer: str
    #: The request carried the culler's own API token (it must never reach a user's server).
    culler_token: bool


@dataclass(frozen=True)
class NoticeSeen:
    """A request of the culler to the light server's notice API (``PUT``, ``GET`` or ``DELETE``)."""

    time: float
    key: str
    method: str


@dataclass(frozen=True)
class Sample:
    time: float
    rss_mib: float | None
    fds: int | None
    tasks: int | None
    servers_running: int


@dataclass(frozen=True)
class StatusProbe:
    time: float
    latency: float
    #: HTTP status, or None when no answer came.
    status: int | None
    ok: bool
    #: ``api`` (``api/status`` with a token) or ``oauth`` (the page, logged in through the hub's OAuth).
    kind: str = "api"
    detail: str = ""


_LISTS: dict[str, type[Any]] = {
    "activities": Activity,
    "busy": Busy,
    "starts": DriverStart,
    "stops": DriverStop,
    "vanished": Vanished,
    "deletes": HubDelete,
    "faults": Fault,
    "intents": CullIntent,
    "passes": PassEnd,
    "spares": Spare,
    "log_lines": LogLine,
    "warnings": WarningReceived,
    "inspections": Inspection,
    "notices": NoticeSeen,
    "samples": Sample,
    "status": StatusProbe,
}


@dataclass
class Timeline:
    params: Params
    #: The run's start (the culler started) and end (the culler was asked to stop).
    started: float
    ended: float
    #: When the hub first answered (its polls of the proxy start then).
    hub_up_at: float
    activities: list[Activity] = field(default_factory=list)
    busy: list[Busy] = field(default_factory=list)
    starts: list[DriverStart] = field(default_factory=list)
    stops: list[DriverStop] = field(default_factory=list)
    vanished: list[Vanished] = field(default_factory=list)
    deletes: list[HubDelete] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    intents: list[CullIntent] = field(default_factory=list)
    passes: list[PassEnd] = field(default_factory=list)
    spares: list[Spare] = field(default_factory=list)
    log_lines: list[LogLine] = field(default_factory=list)
    warnings: list[WarningReceived] = field(default_factory=list)
    inspections: list[Inspection] = field(default_factory=list)
    notices: list[NoticeSeen] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    status: list[StatusProbe] = field(default_factory=list)
    #: The culler's process ids seen during the run (one, if it was never restarted), and its exit status.
    culler_pids: list[int] = field(default_factory=list)
    culler_exit: int | None = None
    #: When the culler's process was found gone before the run ended (None: it lived throughout).
    culler_died_at: float | None = None
    #: The run's settings and planned faults, as the harness wrote them (for a judgment again later).
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Timeline:
        values = dict(data)
        params = dict(values.pop("params"))
        for name in ("long_users", "exempt_users", "features"):
            params[name] = tuple(params.get(name, ()))
        lists: dict[str, Any] = {
            name: [_load(kind, item) for item in values.pop(name, [])] for name, kind in _LISTS.items()
        }
        return cls(params=Params(**params), **values, **lists)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json()))

    @classmethod
    def load(cls, path: Path) -> Timeline:
        return cls.from_json(json.loads(path.read_text()))


def _load(kind: type[Any], item: dict[str, Any]) -> Any:
    names = {f.name for f in fields(kind)}
    values = {key: value for key, value in item.items() if key in names}
    if "targets" in values:
        values["targets"] = tuple(values["targets"])
    return kind(**values)
