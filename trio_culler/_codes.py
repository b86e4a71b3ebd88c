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

__all__ = ["CODES", "PAGE_WORDING", "CodeInfo", "DecisionCode", "PageWording"]


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


def _info(reason: str, code: DecisionCode, *, culls: bool = False, signal: str = "hub", **page: str) -> CodeInfo:
    wording = PageWording(name=page.pop("name", code.value.replace("_", " ")), **page)
    return CodeInfo(reason, code.value, code.value if culls else None, signal, wording)


#: Everything about each code. A test checks that every code has a row.
CODES: Mapping[DecisionCode, CodeInfo] = {
    _C.IDLE: _info(
        "inactive for {inactive}{no_busy}",
        _C.IDLE,
        culls=True,
        due_for="idleness",
        measured="idle",
        option="--timeout",
    ),
    _C.MAX_AGE: _info(
        "age {age}, inactive for {inactive}",
        _C.MAX_AGE,
        culls=True,
        name="max age",
        due_for="max age",
        measured="age",
        option="--max-age",
    ),
    _C.BUSY_EXPIRED: _info(
        "kernel busy for {busy}, over max-busy {detail}, inactive for {inactive}",
        _C.BUSY_EXPIRED,
        culls=True,
        signal="kernel_busy",
        due_for="a busy kernel's limit",
        measured="kernel busy",
        option="--max-busy",
    ),
    _C.KERNELS_IDLE: _info(
        "kernels idle for {inactive}, hub activity {hub_inactive}",
        _C.KERNELS_IDLE,
        culls=True,
        signal="kernel_activity",
        due_for="their kernels' idleness",
        measured="kernels idle",
        option="--timeout, by the kernels",
    ),
    _C.ACTIVE: _info("active: inactive for {inactive}, age {age}", _C.ACTIVE),
    _C.KERNELS_ACTIVE: _info(
        "active: kernels idle for {inactive}, hub activity {hub_inactive}, age {age}",
        _C.KERNELS_ACTIVE,
        signal="kernel_activity",
    ),
    _C.KERNEL_BUSY: _info("kernel busy for {busy}", _C.KERNEL_BUSY, signal="kernel_busy"),
    _C.EXEMPT: _info("exempt by a rule", _C.EXEMPT),
    _C.PENDING: _info("pending {detail}", _C.PENDING),
    _C.NOT_READY: _info("not ready", _C.NOT_READY),
    _C.DEFAULT_DISABLED: _info("default disabled", _C.DEFAULT_DISABLED),
    _C.NAMED_DISABLED: _info("named disabled", _C.NAMED_DISABLED),
    _C.HOOK_FAILED: _info("cull_arbiter_hook failed: {detail}", _C.HOOK_FAILED),
    _C.INSPECTION_FAILED: _info("cannot inspect: {detail}", _C.INSPECTION_FAILED),
    _C.DISABLED: _info("user culling disabled", _C.DISABLED),
    _C.SERVERS_LEFT: _info("{detail} server(s) still running", _C.SERVERS_LEFT),
    _C.SERVERS_UNKNOWN: _info("servers not visible to this token", _C.SERVERS_UNKNOWN),
    _C.ADMIN: _info("admin user", _C.ADMIN),
}

#: The page's wording by code string, as the status page's templates look it up.
PAGE_WORDING: Mapping[str, PageWording] = {code.value: info.page for code, info in CODES.items()}
