"""Prometheus metrics, fed by pass reports and served by prometheus-client on their own port.

The registry is private to each :class:`Metrics` (not prometheus-client's global one), so an embedding
application's metrics and ours never collide, and tests can create as many as they like.

What alerts read (``docs/alerts.yml``) is kept true: a pass that did not run (hub down, scopes, a wrong
``--url``: see :data:`~._report.OUTCOMES`) is counted by its outcome, and moves neither the duration histogram
nor the last pass's time, and only a pass that ran moves the last *successful* pass's time. Gauges about what
the last pass saw (users, servers, servers kept) describe the last pass that ran. A dry run's
culls have counters of their own: ``servers_culled_total`` counts what the hub was asked to stop and took.

Every label value a counter can take exists, at 0, from the start: an alert on
``increase(trio_culler_errors_total{kind="scope"}[1h]) > 0`` must work on a culler that has never failed yet
(a series that appears only with its first increment has no increase to show). A rule or error kind added
elsewhere is added to :data:`CULL_REASONS` / :data:`ERROR_KINDS` (a test checks the error kinds against the
exception tree).
"""

from __future__ import annotations

import platform
from collections.abc import Sequence

import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector, start_http_server

from ._codes import CODES, SERVER_KEPT_CODES
from ._errors import HubError
from ._report import OUTCOMES, PassReport
from ._version import __version__

__all__ = ["CULL_REASONS", "ERROR_KINDS", "KEPT_REASONS", "Metrics", "count_trio_tasks"]

#: The codes that cull a server, by their metric labels (``_codes.CODES``).
CULL_REASONS = tuple(info.metric for info in CODES.values() if info.event is not None)
#: Why a pass keeps a server: the codes that keep one (the users' codes aside), and ``warned``: kept until the
#: notice its user was promised runs out.
KEPT_REASONS = (
    *(CODES[code].metric for code in SERVER_KEPT_CODES),
    "warned",
)
#: Why a server could not be inspected (``_inspect.InspectionFailed.kind``), as the README lists them.
INSPECTION_FAILURE_KINDS = (
    "timeout",
    "unreachable",
    "forbidden",
    "not_found",
    "status",
    "unreadable",
    "no_url",
    "status_unreadable",
)
#: Every ``kind`` a pass records: the HubError kinds, ``unreadable`` (skipped models), ``internal`` (a bug),
#: ``inspection`` (a server kept because its answer could not be read), ``hook`` (a cull_arbiter_hook failed),
#: ``credential`` (no per-server token could be had for a server).
ERROR_KINDS = (
    "unavailable",
    "timeout",
    "auth",
    "scope",
    "status",
    "protocol",
    "unreadable",
    "internal",
    "credential",
    "inspection",
    "hook",
)

_PASS_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, float("inf"))


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None, *, interval: float | None = None) -> None:
        """``interval``: the seconds between passes (``--cull-every`` in force), for alerts on staleness."""
        self.registry = CollectorRegistry(auto_describe=True) if registry is None else registry
        r = self.registry

        def gauge(name: str, documentation: str) -> Gauge:
            return Gauge(name, documentation, registry=r)

        def counter(name: str, documentation: str, label: str | None = None, values: Sequence[str] = ()) -> Counter:
            """A counter; with a label, every value of which exists at 0 from the start (see the module's
            docstring)."""
            if label is None:
                return Counter(name, documentation, registry=r)
            labelled = Counter(name, documentation, [label], registry=r)
            for value in values:
                labelled.labels(value)
            return labelled

        self.build = Info("trio_culler_build", "The culler's version, and Python's.", registry=r)
        self.build.info({"version": __version__, "python": platform.python_version()})
        if registry is None:
            # process_start_time_seconds (the staleness alert's grace at start-up), memory, CPU and file
            # descriptors, where /proc has them; a registry of the caller's may have its own already.
            ProcessCollector(registry=r)
        self.interval = gauge(
            "trio_culler_pass_interval_seconds", "Seconds between the starts of two passes (--cull-every)."
        )
        if interval is not None:
            self.interval.set(interval)
        self.config_error = gauge(
            "trio_culler_config_error",
            "1 while the configuration cannot be used: no pass runs (the status page and the log say why).",
        )
        self.servers_culled = counter(
            "trio_culler_servers_culled",
            "Servers culled (the hub took the stop), by the rule that culled them; dry runs not included.",
            "reason",
            CULL_REASONS,
        )
        self.servers_would_cull = counter(
            "trio_culler_servers_would_cull",
            "Servers a dry run would have culled, by the rule that would have culled them.",
            "reason",
            CULL_REASONS,
        )
        self.users_culled = counter("trio_culler_users_culled", "Users deleted; dry runs not included.")
        self.users_would_cull = counter("trio_culler_users_would_cull", "Users a dry run would have deleted.")
        self.passes = counter(
            "trio_culler_passes",
            "Passes finished, by outcome: ran, hub_down, scopes, failed, interrupted (see the README).",
            "outcome",
            OUTCOMES,
        )
        self.pass_duration = Histogram(
            "trio_culler_pass_duration_seconds",
            "Wall time of the passes that read users.",
            buckets=_PASS_BUCKETS,
            registry=r,
        )
        self.last_pass = gauge(
            "trio_culler_last_pass_timestamp_seconds", "Unix time at which the last pass that read users finished."
        )
        self.last_successful_pass = gauge(
            "trio_culler_last_successful_pass_timestamp_seconds",
            "Unix time at which the last pass that ran (read every page of users, decided every user) finished; "
            "0 before the first.",
        )
        self.last_pass_ok = gauge(
            "trio_culler_last_pass_success", "1 if the last pass completed without errors, else 0."
        )
        self.errors = counter(
            "trio_culler_errors", "Failed requests and unreadable data, by kind.", "kind", ERROR_KINDS
        )
        self.users_seen = gauge("trio_culler_users_seen", "Users looked at by the last pass that ran.")
        self.servers_seen = gauge("trio_culler_servers_seen", "Servers looked at by the last pass that ran.")
        self.servers_pending = counter(
            "trio_culler_servers_stop_pending", "Stops the hub answered 202 (still stopping)."
        )
        self.warnings = counter(
            "trio_culler_warnings",
            "Warnings before a cull, by outcome: sent, or failed (hook or --warn-url).",
            "outcome",
            ("sent", "failed"),
        )
        self.warning_events = counter(
            "trio_culler_warning_events",
            "The warnings' events: warning, cancelled (used, spared, kept or stopped), culled.",
            "event",
            ("warning", "cancelled", "culled"),
        )
        self.notices = counter(
            "trio_culler_notices",
            "Notices to servers (trio-culler-notice), by outcome: delivered, failed, no_extension (servers that "
            "answered 404, once each per pass).",
            "outcome",
            ("delivered", "failed", "no_extension"),
        )
        self.keeps = counter("trio_culler_keeps", "Warned servers spared because their users asked to keep them.")
        self.skipped = counter("trio_culler_users_skipped", "Users skipped because unreadable.")
        self.servers_inspected = counter(
            "trio_culler_servers_inspected", "Servers whose kernels and terminals were read."
        )
        self.inspection_failures = counter(
            "trio_culler_inspection_failures",
            "Servers that could not be inspected (then decided from the hub's data), by kind.",
            "kind",
            INSPECTION_FAILURE_KINDS,
        )
        self.hub_up = gauge(
            "trio_culler_hub_up", "1 if the last probe reached the hub and it accepted the token, else 0."
        )
        self.servers_kept = Gauge(
            "trio_culler_servers_kept",
            "Servers the last pass that ran kept, by why (warned: waiting for the notice its user was promised).",
            ["reason"],
            registry=r,
        )
        for reason in KEPT_REASONS:
            self.servers_kept.labels(reason)
        self.warnings_pending = gauge(
            "trio_culler_warnings_pending", "Warnings waiting for delivery when the last pass ended."
        )
        self.tasks = gauge(
            "trio_culler_trio_tasks",
            "Tasks alive in the culler's trio run, counted at the end of each pass (a leak of tasks shows as growth).",
        )

    def observe_config_error(self) -> None:
        """The configuration cannot be used: no pass will run (what the culler waiting with the error shows)."""
        self.config_error.set(1)

    def observe_probe(self, error: HubError | None) -> None:
        """A start-up probe (before the first pass): a hub down from the start counts as an error too."""
        self.hub_up.set(0 if error is not None else 1)
        if error is not None:
            self.errors.labels(kind=error.kind).inc()

    def observe(self, report: PassReport) -> None:
        """Fold one finished pass into the metrics. A dry run counts what it would have culled apart."""
        culled = self.servers_would_cull if report.dry_run else self.servers_culled
        for rule, count in report.servers_culled.items():
            culled.labels(reason=rule).inc(count)
        if report.dry_run:
            self.users_would_cull.inc(report.users_culled)
        else:
            self.users_culled.inc(report.users_deleted)
        self.passes.labels(outcome=report.outcome).inc()
        finished = report.started.timestamp() + report.duration
        if report.listed:
            self.pass_duration.observe(report.duration)
            self.last_pass.set(finished)
        if report.outcome == "ran":
            self.last_successful_pass.set(finished)
            self.users_seen.set(report.users_seen)
            self.servers_seen.set(report.servers_seen)
            for reason in {*KEPT_REASONS, *report.servers_kept}:
                self.servers_kept.labels(reason).set(report.servers_kept.get(reason, 0))
        self.last_pass_ok.set(1 if report.ok else 0)
        for kind, count in report.errors_by_kind.items():
            self.errors.labels(kind=kind).inc(count)
        if report.skipped:
            self.errors.labels(kind="unreadable").inc(report.skipped)
            self.skipped.inc(report.skipped)
        self.servers_pending.inc(report.servers_pending)
        self.warnings.labels(outcome="sent").inc(report.warnings_sent)
        self.warnings.labels(outcome="failed").inc(report.warnings_failed)
        for event, count in report.warning_events.items():
            self.warning_events.labels(event=event).inc(count)
        self.notices.labels(outcome="delivered").inc(report.notices_delivered)
        self.notices.labels(outcome="failed").inc(report.notices_failed)
        self.notices.labels(outcome="no_extension").inc(report.notices_without_extension)
        self.keeps.inc(report.keeps)
        self.servers_inspected.inc(report.servers_inspected)
        for kind, count in report.inspection_failures.items():
            self.inspection_failures.labels(kind=kind).inc(count)
        self.hub_up.set(1 if report.hub_up else 0)
        self.warnings_pending.set(report.warnings_pending)
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
