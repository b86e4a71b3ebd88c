"""The soak's oracle: a pure judgment of a :class:`~soak_timeline.Timeline`, with no clock and no I/O.

What the hub knew when the culler listed. The culler decides with the hub's ``last_activity``; the hub learns of
traffic through the proxy only when it polls the proxy's routes, every ``activity_interval`` seconds while it runs
(the first poll one interval after it starts). So an activity answered at ``t`` is *visible* from the first poll
at or after ``t`` (bounded by ``max(t, hub up) + activity_interval + visibility_slack``), later if the hub was down
in between, and never if the proxy restarted before that poll (its record of the traffic died with it). A spawn is
visible as soon as the hub said ready (the hub writes it itself), and so is a keep (the culler reads it itself).

Which listing judged a cull. The culler's log does not say; the start of the pass that culled it does (its summary
line carries the pass's duration): the listing came at or after it. Called ``P`` below.

The invariants, per cull (a DELETE the hub answered 202 or 204 for a server the driver had running):

- **active**: the last activity *of its user* (a request or kernel traffic through the proxy, a spawn, a keep)
  visible at ``P`` is less than the server's timeout before ``P``: the hub's own data said its user was using it,
  and it was culled. Exact, modulo ``visibility_slack``: at least as strict as "activity within the timeout,
  allowing the activity interval and one ``--cull-every``". The stamp the proxy puts on a route the hub adds back
  after a proxy restart is no user's: it excuses a late cull, but a cull despite it is no violation (the culler's
  own next request through the proxy overwrites it before the hub ever shows it, as it would a user's request:
  which is why a user's request there must count, and the stamp need not);
- **exempt**: a server its rule exempts was culled;
- **busy**: a kernel was busy from before ``P`` to after the DELETE (the culler's inspection, between the two, saw
  it busy);
- **race**: the server was (re)started after ``P``: the listing that judged it saw another instance. ``P`` is a
  conservative proxy for the listing (a server started between ``P`` and the listing was seen fresh, and a fresh
  server is never culled); measured, and an invariant with the ``race_guard`` feature;
- **unwarned**: no warning for the server reached the webhook after its last visible activity and before the
  DELETE; **early**: the DELETE came before the ``cull_at`` its latest warning announced.

And over the run: idle servers culled (or still running, or stopped by their user) later than timeout +
``cull_every`` + ``late_slack`` after their last activity (count, worst; explained when a fault overlaps);
ERROR lines (and lines that are not JSON) that no injected fault explains: 0; status probes that failed outside the
windows when the hub or proxy was down on purpose: 0; the least-squares growth of RSS, FDs and trio tasks after
warm-up within bounds; one culler process throughout; at least one cull, one warning, and every planned fault run.
"""

from __future__ import annotations

import bisect
import math
import re
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from soak_timeline import GLOBAL_FAULTS, Activity, Busy, Fault, HubDelete, Params, Timeline

__all__ = ["Instance", "Invariant", "Verdict", "fit_growth", "judge", "render", "visible_at"]

#: The hub's answers to a stop that mean it stopped (or is stopping) a running server.
_STOPPED = (200, 202, 204)
#: Activity kinds the hub knows at once (it writes them itself), or the culler reads directly.
_IMMEDIATE = ("spawn", "keep")
#: Errors no fault excuses: a bug, a lost warning.
_NEVER_EXCUSED = re.compile(r"Unexpected error|reporter failed|listener failed|queue full|Could not warn", re.I)
#: How far from its DELETE the culler's "Culling server" line may be.
_INTENT_WINDOW = 600.0
#: Hub-side faults after which status probes are excused for Params.status_after, and the proxy's (shorter).
_STATUS_FAULTS = {"hub_restart": None, "hub_503": None, "proxy_restart": 5.0}
#: Tolerance of timestamp comparisons (milliseconds in log lines, the hub's rounding).
_TOL = 0.5


@dataclass
class Instance:
    """One run of a server, from the driver's start to whatever ended it."""

    key: str
    requested: float
    ready: float | None
    end: float | None = None
    #: ``cull``, ``driver``, ``vanished``, ``replaced``, or None while running (at the run's end).
    cause: str | None = None
    delete: HubDelete | None = None


@dataclass(frozen=True)
class Invariant:
    name: str
    ok: bool
    value: float
    limit: float
    note: str = ""


@dataclass
class Verdict:
    culls: int = 0
    noop_deletes: int = 0
    injected_deletes: int = 0
    violations: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    races: list[dict[str, Any]] = field(default_factory=list)
    late: dict[str, Any] = field(default_factory=dict)
    notice: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, Any] = field(default_factory=dict)
    warnings_by_event: dict[str, int] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    invariants: list[Invariant] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(invariant.ok for invariant in self.invariants)

    @property
    def broken(self) -> list[Invariant]:
        return [invariant for invariant in self.invariants if not invariant.ok]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data


# -- visibility -----------------------------------------------------------------------------------------------


def hub_up_periods(timeline: Timeline) -> list[tuple[float, float]]:
    """When the hub ran (and so polled the proxy): from each start to the next stop."""
    periods: list[tuple[float, float]] = []
    start = timeline.hub_up_at
    for fault in sorted((f for f in timeline.faults if f.kind == "hub_restart"), key=lambda f: f.start):
        down = float(fault.detail.get("down_at", fault.start))
        periods.append((start, down))
        start = float(fault.detail.get("up_at", fault.end))
    periods.append((start, math.inf))
    return periods


def proxy_kills(timeline: Timeline) -> list[float]:
    return sorted(f.start for f in timeline.faults if f.kind == "proxy_restart")


def visible_at(
    activity: Activity, periods: Sequence[tuple[float, float]], kills: Sequence[float], params: Params
) -> float:
    """When the hub knew of ``activity`` at the latest (``inf``: never, the proxy lost it)."""
    if activity.kind in _IMMEDIATE:
        return activity.answered
    for up, down in periods:
        if down < activity.answered:
            continue
        poll = max(activity.answered, up) + params.activity_interval + params.visibility_slack
        if poll > down:
            continue  # the hub stopped first (it may have polled: assume not); its next run folds it in
        index = bisect.bisect_right(kills, activity.sent)
        if index < len(kills) and kills[index] < poll:
            return math.inf
        return poll
    return math.inf


# -- instances ----------------------------------------------------------------------------------------------


def instances(timeline: Timeline) -> tuple[dict[str, list[Instance]], int, int]:
    """Every server's runs, with the DELETE that ended each culled one; plus the DELETEs that stopped nothing
    (the server was already stopped) and those the front answered itself."""
    events: dict[str, list[tuple[float, int, Any]]] = defaultdict(list)
    # At equal times a start comes before a stop or a DELETE (the order the driver and the front saw them in).
    for start in timeline.starts:
        events[start.key].append((start.requested, 0, start))
    for stop in timeline.stops:
        events[stop.key].append((stop.requested, 1, stop))
    for vanished in timeline.vanished:
        events[vanished.key].append((vanished.time, 1, vanished))
    noop = injected = 0
    for delete in timeline.deletes:
        if delete.injected:
            injected += 1
        elif delete.status in _STOPPED:
            events[delete.key].append((delete.sent, 2, delete))
    runs: dict[str, list[Instance]] = defaultdict(list)
    for key, items in events.items():
        current: Instance | None = None
        for time, _order, event in sorted(items, key=lambda item: (item[0], item[1])):
            kind = type(event).__name__
            if kind == "DriverStart":
                if current is not None:
                    current.end, current.cause = time, "replaced"
                current = Instance(key, event.requested, event.ready)
                runs[key].append(current)
            elif current is None:
                if kind == "HubDelete":
                    noop += 1
            elif kind == "HubDelete":
                current.end, current.cause, current.delete = time, "cull", event
                current = None
            else:
                current.end, current.cause = time, "driver" if kind == "DriverStop" else "vanished"
                current = None
    return runs, noop, injected


# -- the judgment -------------------------------------------------------------------------------------------


class _Index:
    """Per-server, time-sorted views of the timeline, with the visibility of each activity worked out once."""

    def __init__(self, timeline: Timeline, runs: dict[str, list[Instance]]) -> None:
        params = timeline.params
        self.periods = hub_up_periods(timeline)
        self.kills = proxy_kills(timeline)
        activities = list(timeline.activities)
        for run in (run for key_runs in runs.values() for run in key_runs):
            ready = run.ready if run.ready is not None else run.requested
            activities.append(Activity(run.key, run.requested, ready, "spawn"))
        # The proxy sets a route's last_activity when the route is added: after a restart of the proxy, the hub
        # adds back every running server's route, and each looks active at that moment.
        for fault in (f for f in timeline.faults if f.kind == "proxy_restart"):
            for key_runs in runs.values():
                for run in key_runs:
                    if run.requested < fault.start and (run.end is None or run.end > fault.end):
                        activities.append(Activity(run.key, fault.start, fault.end, "route"))
        self.activities: dict[str, list[tuple[float, float, Activity]]] = defaultdict(list)
        for activity in activities:
            vis = visible_at(activity, self.periods, self.kills, params)
            self.activities[activity.key].append((activity.sent, vis, activity))
        for items in self.activities.values():
            items.sort(key=lambda item: item[0])
        self.sent_times = {key: [sent for sent, _vis, _a in items] for key, items in self.activities.items()}
        self.busy: dict[str, list[Busy]] = defaultdict(list)
        for busy in timeline.busy:
            self.busy[busy.key].append(busy)
        self.intents = _by_key(timeline.intents, lambda i: i.key, lambda i: i.time)
        self.spares = _by_key(timeline.spares, lambda s: s.key, lambda s: s.time)
        self.warnings = _by_key(
            (w for w in timeline.warnings if w.event in (None, "warning")), lambda w: w.key, lambda w: w.received
        )
        self.culled = _by_key(
            (w for w in timeline.warnings if w.event == "culled"), lambda w: w.key, lambda w: w.received
        )
        self.pass_ends = sorted(timeline.passes, key=lambda p: p.time)
        self.pass_times = [p.time for p in self.pass_ends]

    def last_visible(self, key: str, at: float) -> float | None:
        """The newest activity of ``key``'s user (its earliest time) the hub knew of at ``at``: not the proxy's
        stamp on a restored route (see the module docstring, **active**)."""
        items = self.activities.get(key, [])
        index = bisect.bisect_right(self.sent_times.get(key, []), at)
        for sent, vis, activity in reversed(items[:index]):
            if vis <= at and activity.kind != "route":
                return sent
        return None

    def last_answered(self, key: str, start: float, end: float) -> float | None:
        """The newest activity of ``key`` in ``[start, end]`` (its latest time), for lateness."""
        times = [a.answered for sent, _vis, a in self.activities.get(key, []) if start <= sent <= end]
        return max(times, default=None)

    def pass_start(self, intent_time: float) -> float | None:
        index = bisect.bisect_left(self.pass_times, intent_time)
        if index >= len(self.pass_ends):
            return None
        return self.pass_ends[index].started


def _by_key(items: Iterable[Any], key: Callable[[Any], str], time: Callable[[Any], float]) -> dict[str, list[Any]]:
    grouped: dict[str, list[Any]] = defaultdict(list)
    for item in items:
        grouped[key(item)].append(item)
    for values in grouped.values():
        values.sort(key=time)
    return grouped


def judge(timeline: Timeline, *, planned_faults: Sequence[str] = (), final: bool = True) -> Verdict:
    """The verdict on ``timeline``. While the run goes on (``final`` false), culls after the last pass the log
    shows are left for a later judgment: their pass, and maybe their log line, are not written yet."""
    params = timeline.params
    runs, noop, injected = instances(timeline)
    horizon = math.inf if final else max((p.time for p in timeline.passes), default=-math.inf)
    index = _Index(timeline, runs)
    verdict = Verdict(noop_deletes=noop, injected_deletes=injected)
    violations: dict[str, list[dict[str, Any]]] = {
        "active": [],
        "exempt": [],
        "busy": [],
        "unwarned": [],
        "early": [],
        "unknown_pass": [],
    }
    notices: list[dict[str, Any]] = []
    for key_runs in runs.values():
        for run in key_runs:
            if run.cause != "cull" or run.delete is None or run.delete.sent > horizon:
                continue
            verdict.culls += 1
            _judge_cull(run, run.delete, params, index, violations, verdict.races, notices)
    verdict.violations = violations
    verdict.notice = _notice(notices, params)
    short_notices = verdict.notice["shorter_than_warn_before"]
    verdict.late = _lateness(timeline, runs, index)
    verdict.errors = _errors(timeline)
    verdict.status = _status(timeline)
    verdict.resources = _resources(timeline)
    verdict.warnings_by_event = _count(w.event or "warning (no event field)" for w in timeline.warnings)
    verdict.counts = {
        "servers_started": len(timeline.starts),
        "servers_stopped_by_users": sum(1 for s in timeline.stops if s.why == "logout"),
        "restarts_by_users": sum(1 for s in timeline.stops if s.why == "restart"),
        "vanished": len(timeline.vanished),
        "activities": len(timeline.activities),
        "busy_cells": len(timeline.busy),
        "passes": len(timeline.passes),
        "passes_aborted": sum(1 for p in timeline.passes if p.aborted),
        "kernel_busy_spares": len(timeline.spares),
        "faults": _count(f.kind for f in timeline.faults),
        "inspections": _count(i.answer for i in timeline.inspections),
        "inspections_with_culler_token": sum(1 for i in timeline.inspections if i.culler_token),
        "notice_requests": _count(n.method for n in timeline.notices),
    }
    verdict.invariants = _invariants(timeline, verdict, short_notices, planned_faults)
    return verdict


def _judge_cull(
    run: Instance,
    delete: HubDelete,
    params: Params,
    index: _Index,
    violations: dict[str, list[dict[str, Any]]],
    races: list[dict[str, Any]],
    notices: list[dict[str, Any]],
) -> None:
    key = run.key
    intents = [i for i in index.intents.get(key, []) if delete.sent - _INTENT_WINDOW <= i.time <= delete.sent + _TOL]
    intent = intents[-1] if intents else None
    at = intent.time if intent is not None else delete.sent
    started = index.pass_start(at)
    record: dict[str, Any] = {
        "key": key,
        "deleted_at": delete.sent,
        "status": delete.status,
        "rule": intent.rule if intent is not None else None,
        "instance_started": run.requested,
    }
    if started is None or started > at + _TOL:
        violations["unknown_pass"].append(record)
        started = at
    record["pass_started"] = started
    if run.requested > started:
        races.append(record)
        return
    limit = params.timeout_for(key)
    if limit is None:
        violations["exempt"].append(record)
        return
    last = index.last_visible(key, started)
    record["idle_at_pass"] = None if last is None else started - last
    if last is not None and started - last < limit - _TOL:
        violations["active"].append({**record, "timeout": limit})
    for busy in index.busy.get(key, []):
        if busy.start <= started - params.busy_slack and busy.end >= delete.sent + params.busy_slack:
            violations["busy"].append({**record, "busy_from": busy.start, "busy_until": busy.end})
            break
    if not params.warn_before:
        return
    warnings = [w for w in index.warnings.get(key, []) if w.received <= delete.sent + _TOL]
    warning = warnings[-1] if warnings else None
    if warning is None or (last is not None and warning.received < last - _TOL):
        violations["unwarned"].append(record)
        return
    if "events" in params.features:
        culled = [w for w in index.culled.get(key, []) if delete.sent - 5.0 <= w.received <= delete.sent + 120.0]
        if not culled:
            violations.setdefault("no_culled_event", []).append(record)
    if warning.cull_at is not None:
        notices.append(
            {
                "key": key,
                "warned_at": warning.received,
                "announced": warning.cull_at - warning.received,
                "given": delete.sent - warning.received,
            }
        )
        if delete.sent < warning.cull_at - 1.0:
            violations["early"].append({**record, "warned_at": warning.received, "cull_at": warning.cull_at})


def _notice(notices: list[dict[str, Any]], params: Params) -> dict[str, Any]:
    """How much notice the warned culls had: what the warning announced (its cull_at, from when it arrived), and
    what the user got (from the warning's arrival to the DELETE)."""
    announced = [n["announced"] for n in notices]
    given = [n["given"] for n in notices]
    short = [n for n in notices if n["given"] < params.warn_before - 1.0]
    return {
        "warned_culls": len(notices),
        "announced_min_seconds": min(announced, default=None),
        "announced_median_seconds": statistics.median(announced) if announced else None,
        "given_min_seconds": min(given, default=None),
        "given_median_seconds": statistics.median(given) if given else None,
        "shorter_than_warn_before": len(short),
        "shortest": sorted(short, key=lambda n: n["given"])[:10],
    }


def _overlapping_faults(faults: Sequence[Fault], start: float, end: float, after: float) -> list[str]:
    """Faults that overlap ``[start, end]`` (or ended less than ``after`` before it). Any fault, targeted or not,
    may delay any cull: a hung or dripping server holds its pass (and so the next one) until the inspection's
    deadline."""
    return [fault.kind for fault in faults if fault.start <= end and fault.end + after >= start]


def _lateness(timeline: Timeline, runs: dict[str, list[Instance]], index: _Index) -> dict[str, Any]:
    params = timeline.params
    late: list[dict[str, Any]] = []
    for key_runs in runs.values():
        for run in key_runs:
            limit = params.timeout_for(run.key)
            if limit is None or run.ready is None:
                continue
            # The harness stops what still runs after the run's end, when the culler is no longer culling.
            end = min(run.end if run.end is not None else timeline.ended, timeline.ended)
            references = [run.ready]
            answered = index.last_answered(run.key, run.requested, end)
            if answered is not None:
                references.append(answered)
            references += [b.end for b in index.busy.get(run.key, []) if run.requested <= b.start <= end]
            references += [s.time for s in index.spares.get(run.key, []) if run.requested <= s.time <= end]
            due = max(references) + limit
            if end <= due + params.cull_every + params.late_slack:
                continue
            explained = _overlapping_faults(timeline.faults, due, end, params.error_after)
            late.append(
                {
                    "key": run.key,
                    "due": due,
                    "end": end,
                    "late_seconds": end - due,
                    "outcome": run.cause or "still running",
                    "explained_by": sorted(set(explained)),
                }
            )
    unexplained = [item for item in late if not item["explained_by"]]
    return {
        "bound_seconds": params.cull_every + params.late_slack,
        "count": len(late),
        "culled_late": sum(1 for item in late if item["outcome"] == "cull"),
        "not_culled": sum(1 for item in late if item["outcome"] != "cull"),
        "worst_seconds": max((item["late_seconds"] for item in late), default=None),
        "unexplained": len(unexplained),
        "worst_unexplained_seconds": max((item["late_seconds"] for item in unexplained), default=None),
        "examples": sorted(late, key=lambda item: -float(item["late_seconds"]))[:20],
    }


def _errors(timeline: Timeline) -> dict[str, Any]:
    explained: list[dict[str, Any]] = []
    unexplained: list[dict[str, Any]] = []
    for line in timeline.log_lines:
        if line.level not in ("error", "critical", "unparsed"):
            continue
        item = {"time": line.time, "level": line.level, "message": line.message[:300], "event": line.event}
        by = [] if line.level == "unparsed" or _NEVER_EXCUSED.search(line.message) else _explaining(timeline, line)
        if by:
            explained.append({**item, "explained_by": by})
        else:
            unexplained.append(item)
    warnings = _count(line.event or line.message[:40] for line in timeline.log_lines if line.level == "warning")
    return {
        "explained": len(explained),
        "unexplained": len(unexplained),
        "unexplained_lines": unexplained[:50],
        "explained_by_kind": _count(kind for item in explained for kind in item["explained_by"][:1]),
        "warnings_by_event": warnings,
    }


def _explaining(timeline: Timeline, line: Any) -> list[str]:
    params = timeline.params
    found = []
    for fault in timeline.faults:
        if not fault.start - 1.0 <= line.time <= fault.end + params.error_after:
            continue
        if fault.kind in GLOBAL_FAULTS or (line.user and any(t.split("/", 1)[0] == line.user for t in fault.targets)):
            found.append(fault.kind)
    return found


def _status(timeline: Timeline) -> dict[str, Any]:
    params = timeline.params
    windows = []
    for fault in timeline.faults:
        if fault.kind in _STATUS_FAULTS:
            after = _STATUS_FAULTS[fault.kind]
            windows.append((fault.start, fault.end + (params.status_after if after is None else after)))
    result: dict[str, Any] = {}
    for kind in ("api", "oauth"):
        probes = [p for p in timeline.status if p.kind == kind]
        # A probe is excused when any part of it falls in a window (a login begun just before the hub stopped).
        outside = [p for p in probes if not any(a <= p.time + p.latency and p.time <= b for a, b in windows)]
        latencies = sorted(p.latency for p in probes if p.ok)
        outside_latencies = sorted(p.latency for p in outside if p.ok)
        failed_outside = [p for p in outside if not p.ok]
        result[kind] = {
            "probes": len(probes),
            "failed": sum(1 for p in probes if not p.ok),
            "failed_outside_faults": len(failed_outside),
            "failures": [asdict(p) for p in failed_outside[:20]],
            "p50_seconds": _quantile(latencies, 0.5),
            "p99_seconds": _quantile(latencies, 0.99),
            "max_seconds": latencies[-1] if latencies else None,
            "p50_outside_faults_seconds": _quantile(outside_latencies, 0.5),
            "p99_outside_faults_seconds": _quantile(outside_latencies, 0.99),
        }
    return result


def _quantile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    position = min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))
    return values[position]


def fit_growth(points: Sequence[tuple[float, float]]) -> tuple[float, float] | None:
    """Least-squares slope (per hour) of ``(time, value)`` points, and the growth it implies over their span;
    None with fewer than three points."""
    if len(points) < 3:
        return None
    times = [t for t, _v in points]
    values = [v for _t, v in points]
    mean_t = statistics.fmean(times)
    mean_v = statistics.fmean(values)
    spread = sum((t - mean_t) ** 2 for t in times)
    if spread == 0:
        return None
    slope = sum((t - mean_t) * (v - mean_v) for t, v in zip(times, values, strict=True)) / spread
    return slope * 3600, slope * (times[-1] - times[0])


def _resources(timeline: Timeline) -> dict[str, Any]:
    params = timeline.params
    after = timeline.started + params.warmup
    result: dict[str, Any] = {}
    for name, limit in (
        ("rss_mib", params.max_rss_growth_mib),
        ("fds", params.max_fd_growth),
        ("tasks", params.max_task_growth),
    ):
        every = [(s.time, float(v)) for s in timeline.samples if (v := getattr(s, name)) is not None]
        kept = [(t, v) for t, v in every if t >= after]
        fit = fit_growth(kept)
        result[name] = {
            "samples": len(kept),
            "first": kept[0][1] if kept else None,
            "last": kept[-1][1] if kept else None,
            "peak": max((v for _t, v in every), default=None),
            "slope_per_hour": None if fit is None else fit[0],
            "growth": None if fit is None else fit[1],
            "limit": limit,
        }
    return result


def _count(items: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for item in items:
        counts[item] += 1
    return dict(sorted(counts.items()))


def _invariants(
    timeline: Timeline, verdict: Verdict, short_notices: int, planned_faults: Sequence[str]
) -> list[Invariant]:
    features = set(timeline.params.features)
    v = verdict.violations
    out = [
        Invariant("active servers culled", not v["active"], len(v["active"]), 0),
        Invariant("exempt servers culled", not v["exempt"], len(v["exempt"]), 0),
        Invariant("servers culled while a kernel was busy", not v["busy"], len(v["busy"]), 0),
        Invariant("culls without a warning in their idle stretch", not v["unwarned"], len(v["unwarned"]), 0),
        Invariant("culls before the time their warning announced", not v["early"], len(v["early"]), 0),
        Invariant("culls whose pass the log does not show", not v["unknown_pass"], len(v["unknown_pass"]), 0),
        Invariant(
            "ERROR lines no injected fault explains",
            not verdict.errors["unexplained"],
            verdict.errors["unexplained"],
            0,
        ),
    ]
    failed = sum(verdict.status[kind]["failed_outside_faults"] for kind in ("api", "oauth"))
    out.append(Invariant("status page failures outside fault windows", failed == 0, failed, 0))
    for name, label in (
        ("rss_mib", "RSS growth after warm-up (MiB)"),
        ("fds", "open FDs growth after warm-up"),
        ("tasks", "trio tasks growth after warm-up"),
    ):
        entry = verdict.resources[name]
        growth = entry["growth"]
        if growth is None:
            out.append(Invariant(label, False, math.nan, entry["limit"], "too few samples to fit"))
        else:
            out.append(Invariant(label, growth <= entry["limit"], round(growth, 3), entry["limit"]))
    survived = len(set(timeline.culler_pids)) == 1 and timeline.culler_died_at is None
    out.append(
        Invariant(
            "one culler process throughout",
            survived,
            len(set(timeline.culler_pids)),
            1,
            "" if timeline.culler_died_at is None else f"gone at {timeline.culler_died_at:.0f}",
        )
    )
    if timeline.culler_exit is not None:
        out.append(Invariant("culler exit status after SIGTERM", timeline.culler_exit == 0, timeline.culler_exit, 0))
    out.append(Invariant("servers culled (the run exercised culling)", verdict.culls > 0, verdict.culls, 1))
    if timeline.params.warn_before:
        out.append(Invariant("warnings received", bool(timeline.warnings), len(timeline.warnings), 1))
    # A fault that found nothing to act on (no idle server, no real server running) did not exercise anything.
    ran = {f.kind for f in timeline.faults if not f.detail.get("skipped")}
    missing = sorted(set(planned_faults) - ran)
    out.append(Invariant("planned faults that did not run", not missing, len(missing), 0, ", ".join(missing)))
    races = len(verdict.races)
    if "race_guard" in features:
        out.append(Invariant("culls of a server started after its listing", races == 0, races, 0))
    if "tokens" in features:
        leaks = verdict.counts["inspections_with_culler_token"]
        out.append(Invariant("culler's token sent to a user's server", leaks == 0, leaks, 0))
    if "full_notice" in features:
        out.append(Invariant("culls less than --warn-before after their warning", short_notices == 0, short_notices, 0))
    if "events" in features:
        absent = len(v.get("no_culled_event", []))
        out.append(Invariant("culls without a culled event at the webhook", absent == 0, absent, 0))
    return out


def render(verdict: Verdict, *, elapsed: float | None = None) -> str:
    """The verdict in a few lines (printed as the run goes, and at its end)."""
    late = verdict.late
    errors = verdict.errors
    api = verdict.status.get("api", {})
    res = verdict.resources

    def fmt(value: Any, unit: str = "", digits: int = 1) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return f"{value:.{digits}f}{unit}" if isinstance(value, float) else f"{value}{unit}"

    head = f"[{fmt(elapsed / 60, ' min')}] " if elapsed is not None else ""
    lines = [
        f"{head}culls {verdict.culls} (no-op DELETEs {verdict.noop_deletes}, injected {verdict.injected_deletes}); "
        f"violations: active {len(verdict.violations['active'])}, exempt {len(verdict.violations['exempt'])}, "
        f"busy {len(verdict.violations['busy'])}, unwarned {len(verdict.violations['unwarned'])}, "
        f"early {len(verdict.violations['early'])}; restart races {len(verdict.races)}",
        f"  late (> timeout + {fmt(late['bound_seconds'], ' s')}): {late['count']} "
        f"(worst {fmt(late['worst_seconds'], ' s')}), "
        f"unexplained {late['unexplained']} (worst {fmt(late['worst_unexplained_seconds'], ' s')}); "
        f"ERROR lines {errors['explained'] + errors['unexplained']} (unexplained {errors['unexplained']}); "
        f"notice given min {fmt(verdict.notice['given_min_seconds'], ' s')} "
        f"({verdict.notice['shorter_than_warn_before']} shorter than --warn-before)",
        f"  status api p50 {fmt(_ms(api.get('p50_seconds')), ' ms')} p99 {fmt(_ms(api.get('p99_seconds')), ' ms')}, "
        f"failed {api.get('failed', 0)} ({api.get('failed_outside_faults', 0)} outside faults); "
        f"RSS {fmt(res['rss_mib']['last'], ' MiB')} ({fmt(res['rss_mib']['slope_per_hour'], ' MiB/h', 2)}), "
        f"FDs {fmt(res['fds']['last'])} ({fmt(res['fds']['slope_per_hour'], '/h', 2)}), "
        f"tasks {fmt(res['tasks']['last'])} ({fmt(res['tasks']['slope_per_hour'], '/h', 2)})",
    ]
    return "\n".join(lines)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000
