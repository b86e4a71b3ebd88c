"""Prometheus metrics, fed by pass reports and served by prometheus-client on their own port.

The registry is private to each :class:`Metrics` (not prometheus-client's global one), so an embedding
application's metrics and ours never collide, and tests can create as many as they like.

Every label value a counter can take exists, at 0, from the start: an alert on
``increase(trio_culler_errors_total{kind="scope"}[1h]) > 0`` must work on a culler that has never failed yet
(a series that appears only with its first increment has no increase to show). A rule or error kind added
elsewhere is added to :data:`CULL_REASONS` / :data:`ERROR_KINDS` (a test checks the error kinds against the
exception tree).
"""

from __future__ import annotations

from collections.abc import Sequence

import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from ._errors import HubError
from ._report import PassReport

__all__ = ["CULL_REASONS", "ERROR_KINDS", "Metrics", "count_trio_tasks"]

#: The rules that cull a server (``Decision.rule`` of an acting decision).
CULL_REASONS = ("idle", "max_age", "busy_expired", "kernels_idle")
#: Why a server could not be inspected (``_inspect.InspectionFailed.kind``), as the README lists them.
INSPECTION_FAILURE_KINDS = ("timeout", "unreachable", "forbidden", "not_found", "status", "unreadable")
#: Every ``kind`` a pass records: the HubError kinds, ``unreadable`` (skipped models), ``internal`` (a bug).
ERROR_KINDS = ("unavailable", "timeout", "auth", "scope", "status", "protocol", "unreadable", "internal")

_PASS_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, float("inf"))


def _labelled(name: str, documentation: str, label: str, values: Sequence[str], registry: CollectorRegistry) -> Counter:
    """A counter with one label, every value of which exists at 0 from the start (see the module's docstring)."""
    counter = Counter(name, documentation, [label], registry=registry)
    for value in values:
        counter.labels(value)
    return counter


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True) if registry is None else registry
        r = self.registry
        self.servers_culled = _labelled(
            "trio_culler_servers_culled", "Servers culled, by the rule that culled them.", "reason", CULL_REASONS, r
        )
        self.users_culled = Counter("trio_culler_users_culled", "Users deleted.", registry=r)
        self.passes = Counter("trio_culler_passes", "Passes finished (completed or aborted).", registry=r)
        self.pass_duration = Histogram(
            "trio_culler_pass_duration_seconds", "Wall time of a pass.", buckets=_PASS_BUCKETS, registry=r
        )
        self.last_pass = Gauge(
            "trio_culler_last_pass_timestamp_seconds",
            "Unix time at which the last pass finished.",
            registry=r,
        )
        self.last_pass_ok = Gauge(
            "trio_culler_last_pass_success",
            "1 if the last pass completed without errors, else 0.",
            registry=r,
        )
        self.errors = _labelled(
            "trio_culler_errors", "Failed requests and unreadable data, by kind.", "kind", ERROR_KINDS, r
        )
        self.users_seen = Gauge("trio_culler_users_seen", "Users looked at in the last pass.", registry=r)
        self.servers_seen = Gauge("trio_culler_servers_seen", "Servers looked at in the last pass.", registry=r)
        self.servers_pending = Counter(
            "trio_culler_servers_stop_pending", "Stops the hub answered 202 (still stopping).", registry=r
        )
        self.warnings = _labelled(
            "trio_culler_warnings",
            "Warnings before a cull, by outcome: sent, or failed (hook or --warn-url).",
            "outcome",
            ("sent", "failed"),
            r,
        )
        self.skipped = Counter("trio_culler_users_skipped", "Users skipped because unreadable.", registry=r)
        self.servers_inspected = Counter(
            "trio_culler_servers_inspected", "Servers whose kernels and terminals were read.", registry=r
        )
        self.inspection_failures = _labelled(
            "trio_culler_inspection_failures",
            "Servers that could not be inspected (then decided from the hub's data), by kind.",
            "kind",
            INSPECTION_FAILURE_KINDS,
            r,
        )
        self.hub_up = Gauge(
            "trio_culler_hub_up", "1 if the last probe reached the hub and it accepted the token, else 0.", registry=r
        )
        self.tasks = Gauge(
            "trio_culler_trio_tasks",
            "Tasks alive in the culler's trio run, counted at the end of each pass (a leak of tasks shows as growth).",
            registry=r,
        )

    def observe_probe(self, error: HubError | None) -> None:
        """A start-up probe (before the first pass): a hub down from the start counts as an error too."""
        self.hub_up.set(0 if error is not None else 1)
        if error is not None:
            self.errors.labels(kind=error.kind).inc()

    def observe(self, report: PassReport) -> None:
        """Fold one finished pass into the metrics. A dry run counts what it would have culled."""
        for rule, count in report.servers_culled.items():
            self.servers_culled.labels(reason=rule).inc(count)
        self.users_culled.inc(report.users_culled if report.dry_run else report.users_deleted)
        self.passes.inc()
        self.pass_duration.observe(report.duration)
        self.last_pass.set(report.started.timestamp() + report.duration)
        self.last_pass_ok.set(1 if report.ok else 0)
        for kind, count in report.errors_by_kind.items():
            self.errors.labels(kind=kind).inc(count)
        if report.skipped:
            self.errors.labels(kind="unreadable").inc(report.skipped)
            self.skipped.inc(report.skipped)
        self.users_seen.set(report.users_seen)
        self.servers_seen.set(report.servers_seen)
        self.servers_pending.inc(report.servers_pending)
        self.warnings.labels(outcome="sent").inc(report.warnings_sent)
        self.warnings.labels(outcome="failed").inc(report.warnings_failed)
        self.servers_inspected.inc(report.servers_inspected)
        for kind, count in report.inspection_failures.items():
            self.inspection_failures.labels(kind=kind).inc(count)
        self.hub_up.set(1 if report.hub_up else 0)
        tasks = count_trio_tasks()
        if tasks is not None:
            self.tasks.set(tasks)

    def serve(self, port: int, address: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` on a background thread; returns the bound port (useful with port 0)."""
        server, _thread = start_http_server(port, addr=address, registry=self.registry)
        return int(server.server_port)


def count_trio_tasks() -> int | None:
    """Every task of the current trio run, walked from the root task through each task's nurseries; None outside
    a trio run. Counted here, in the run's own thread: /metrics is served from another one, which must not walk
    nurseries that the run is changing."""
    try:
        root = trio.lowlevel.current_root_task()
    except RuntimeError:
        return None
    if root is None:
        return None
    count = 0
    stack = [root]
    while stack:
        task = stack.pop()
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count
