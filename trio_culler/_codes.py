"""Why a server or user is culled or kept: one code per reason, and one table saying everything about each.

A decision's code is read in five places: the log line's reason, the JSON log field ``rule``, the metric label
``trio_culler_servers_culled_total{reason=...}``, the forecast's event (when the code will cull a server that is
kept now) and the status page. Each reads its column of :data:`CODES` (as h11 dispatches its readers from one
table), so a code cannot mean one thing in a log line and another on the page.

The codes are a ``StrEnum``: each member *is* its string (``DecisionCode.IDLE == "idle"``), so JSON lines,
counters keyed by code and comparisons with today's strings keep working. The metric labels and the JSON
``rule`` field are the codes' own strings, as they always were (dashboards and alerts rely on them); the
forecast's event names are the codes of the decisions they foresee (until this table, the forecast said
``max_busy`` where the decision said ``busy_expired``; now both say ``busy_expired``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import attrs

__all__ = ["CODES", "PAGE_WORDING", "SERVER_KEPT_CODES", "CodeInfo", "DecisionCode", "PageWording"]


class DecisionCode(enum.StrEnum):
    # -- a server or user culled
    IDLE = "idle"
    MAX_AGE = "max_age"
    #: A busy kernel's protection ended (``--max-busy``) and the server is idle by its rule.
    BUSY_EXPIRED = "busy_expired"
    #: Idle by its kernels' and terminals' clock (``--kernel-activity-only``).
    KERNELS_IDLE = "kernels_idle"
    # -- a server kept
    ACTIVE = "active"
    KERNELS_ACTIVE = "kernels_active"
    KERNEL_BUSY = "kernel_busy"
    EXEMPT = "exempt"
    PENDING = "pending"
    NOT_READY = "not_ready"
    DEFAULT_DISABLED = "default_disabled"
    NAMED_DISABLED = "named_disabled"
    #: The cull_arbiter_hook raised or answered something that is not a bool: it cannot vouch for a cull.
    HOOK_FAILED = "hook_failed"
    #: The server's own answer could not be read (``--inspect-kernels``): a failure to look never culls.
    INSPECTION_FAILED = "inspection_failed"
    # -- a user kept
    DISABLED = "disabled"
    SERVERS_LEFT = "servers_left"
    SERVERS_UNKNOWN = "servers_unknown"
    ADMIN = "admin"


@attrs.frozen
class PageWording:
    """How the status page words a code: ``name`` in the list of culls; for a forecast, the summary's
    ``due_for`` ("3 for idleness"), the row's ``measured`` quantity and the ``option`` that sets its limit."""

    name: str
    due_for: str = ""
    measured: str = ""
    option: str = ""


@attrs.frozen
class CodeInfo:
    #: The log's reason, formatted with the decision's durations (``inactive``, ``age``, ``busy``,
    #: ``hub_inactive``, as ``HH:MM:SS``), its ``detail``, and ``no_busy`` (", no kernel busy" when inspected).
    reason: str
    #: The label value of the metrics that count this code (the code's own string; see the module docstring).
    metric: str
    #: The forecast's name for a cull by this code; None: a code that never culls, so is never foreseen.
    event: str | None
    #: Which signal measured the idleness: ``hub`` (the hub's last_activity), ``kernel_busy`` or
    #: ``kernel_activity`` (the server's own kernels and terminals).
    signal: str
    page: PageWording


_C = DecisionCode
_BUSY_REASON = "kernel busy for {busy}, over max-busy {detail}, inactive for {inactive}"


def _row(
    code: DecisionCode, reason: str, *, signal: str = "hub", cull: tuple[str, str, str] | None = None, name: str = ""
) -> tuple[DecisionCode, CodeInfo]:
    """A code's row; ``cull``: the page's (due_for, measured, option) of a code that culls, so is foreseen."""
    wording = PageWording(name or code.value.replace("_", " "), *(cull or ()))
    return code, CodeInfo(reason, code.value, None if cull is None else code.value, signal, wording)


#: Everything about each code. A test checks that every code has a row.
CODES: Mapping[DecisionCode, CodeInfo] = dict(
    [
        _row(_C.IDLE, "inactive for {inactive}{no_busy}", cull=("idleness", "idle", "--timeout")),
        _row(_C.MAX_AGE, "age {age}, inactive for {inactive}", cull=("max age", "age", "--max-age"), name="max age"),
        _row(
            _C.BUSY_EXPIRED,
            _BUSY_REASON,
            signal="kernel_busy",
            cull=("a busy kernel's limit", "kernel busy", "--max-busy"),
        ),
        _row(
            _C.KERNELS_IDLE,
            "kernels idle for {inactive}, hub activity {hub_inactive}",
            signal="kernel_activity",
            cull=("their kernels' idleness", "kernels idle", "--timeout, by the kernels"),
        ),
        _row(_C.ACTIVE, "active: inactive for {inactive}, age {age}"),
        _row(
            _C.KERNELS_ACTIVE,
            "active: kernels idle for {inactive}, hub activity {hub_inactive}, age {age}",
            signal="kernel_activity",
        ),
        _row(_C.KERNEL_BUSY, "kernel busy for {busy}", signal="kernel_busy"),
        _row(_C.EXEMPT, "exempt by a rule"),
        _row(_C.PENDING, "pending {detail}"),
        _row(_C.NOT_READY, "not ready"),
        _row(_C.DEFAULT_DISABLED, "default disabled"),
        _row(_C.NAMED_DISABLED, "named disabled"),
        _row(_C.HOOK_FAILED, "cull_arbiter_hook failed: {detail}"),
        _row(_C.INSPECTION_FAILED, "cannot inspect: {detail}"),
        _row(_C.DISABLED, "user culling disabled"),
        _row(_C.SERVERS_LEFT, "{detail} server(s) still running"),
        _row(_C.SERVERS_UNKNOWN, "servers not visible to this token"),
        _row(_C.ADMIN, "admin user"),
    ]
)

#: The page's wording by code string, as the status page's templates look it up.
PAGE_WORDING: Mapping[str, PageWording] = {code.value: info.page for code, info in CODES.items()}

#: The codes with which a pass keeps a server (the rest cull one, or judge a user).
SERVER_KEPT_CODES: tuple[DecisionCode, ...] = (
    _C.ACTIVE,
    _C.KERNELS_ACTIVE,
    _C.KERNEL_BUSY,
    _C.EXEMPT,
    _C.PENDING,
    _C.NOT_READY,
    _C.DEFAULT_DISABLED,
    _C.NAMED_DISABLED,
    _C.HOOK_FAILED,
    _C.INSPECTION_FAILED,
)
