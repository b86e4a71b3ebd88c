"""The long-running culler: a pass at once, then one every ``cull_every`` seconds, never two at a time.

Three ways in, for three kinds of caller:

- ``await nursery.start(serve, config)`` returns a :class:`Culler` once the hub has answered;
- ``async with open_culler(config) as culler:`` does the same and stops it on exit;
- ``await run_pass(config)`` runs a single pass and returns its :class:`PassReport`.

Library code installs no signal handlers: the embedding application decides what a signal means, and calls
:meth:`Culler.stop` (the CLI does exactly that).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING

import attrs
import trio
from trio_util import AsyncValue, wait_any

from ._config import Config
from ._credentials import MIN_LIFETIME, ServerCredentials, open_server_credentials
from ._engine import run_pass_with
from ._errors import CullerError, HubAuthError, HubError
from ._groups import GroupCheck
from ._hub import HubClient, HubStatistics, open_hub_client
from ._notify import Notifier, open_notifier
from ._outage import OutageLog
from ._probe import Probe, probe_hub
from ._report import PassRecorder, PassReport
from ._retry import Backoff, retry
from ._stopping import StopsUnderWay

if TYPE_CHECKING:
    import httpx  # for annotations only: requests are the hub client's business (_hub)

__all__ = [
    "Culler",
    "CullerStatistics",
    "CullerStopped",
    "Drain",
    "ProbeListener",
    "Reporter",
    "open_culler",
    "run_pass",
    "serve",
]

log = logging.getLogger("trio_culler")

#: Called with every finished pass's report (metrics, tests, an embedder's own bookkeeping).
Reporter = Callable[[PassReport], None]
#: Called after each start-up probe: None once the hub accepted the token, else why not (metrics count it:
#: a culler that never reached its hub must not look, to an alert, like one that has not run yet).
ProbeListener = Callable[[HubError | None], None]

#: How long in-flight requests may finish after :meth:`Culler.stop` by default.
DEFAULT_GRACE = 5.0
_STARTUP_RETRY_CAP = 60.0
#: What a start-up probe that failed says, at which level: a refused token needs an operator.
_REFUSED = (logging.ERROR, "The hub at %s refused the culler's token: %s; retrying in %g s")
_NOT_READY = (logging.WARNING, "Hub not ready at %s: %s; retrying in %g s")


class Drain:
    """A graceful stop, for a pass run by :class:`Culler` and for the command line's ``--once`` alike: once
    :meth:`stop` is called, :attr:`draining` tells the pass to take no new page or user, and :attr:`scope`
    (which the caller runs the pass in) gives the requests in flight ``grace`` seconds, then cancels them."""

    def __init__(self) -> None:
        self.draining = trio.Event()
        self.scope = trio.CancelScope()

    def stop(self, grace: float) -> None:
        """Begin draining; a later call may shorten the grace period, never lengthen it (``0``: cancel now)."""
        self.draining.set()
        self.scope.deadline = min(self.scope.deadline, trio.current_time() + grace)


class CullerStopped(CullerError):
    """:meth:`Culler.run_pass_now` on a culler that will run no more passes: :meth:`Culler.stop` was called,
    or :meth:`Culler.serve` has returned or raised (for whatever reason: a stop before the hub ever answered,
    the embedding nursery cancelled, a bug). Like ``trio.ClosedResourceError``: raised at once, never after
    a wait."""


class _Stopped(Exception):
    """The culler was stopped while it waited for the hub."""


@attrs.frozen
class CullerStatistics:
    passes_started: int
    passes_completed: int
    pass_running: bool
    hub: HubStatistics


class Culler:
    """A culler bound to one configuration. Run it with :meth:`serve`; control it from any task."""

    def __init__(
        self,
        config: Config,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        reporters: Sequence[Reporter] = (),
        probe_listeners: Sequence[ProbeListener] = (),
    ) -> None:
        self.config = config
        self._transport = transport
        self._reporters = list(reporters)
        self._probe_listeners = list(probe_listeners)
        self._hub: HubClient | None = None
        self._drain = Drain()
        #: Set when serve() is over, however it ended: no pass will start any more.
        self._ended = trio.Event()
        # Pass numbers: the last one started, finished, and asked for by run_pass_now() (the loop starts that
        # one at once instead of waiting for its schedule).
        self._started = AsyncValue(0)
        self._finished = AsyncValue(0)
        self._requested = AsyncValue(0)
        self._running = False
        #: The report of the last pass that finished, or None before the first one.
        self.last_report: PassReport | None = None
        self._outage = OutageLog(config.url)
        self._group_check = GroupCheck(config.rules)
        self._stops = StopsUnderWay()

    def statistics(self) -> CullerStatistics:
        hub = self._hub.statistics() if self._hub is not None else HubStatistics()
        return CullerStatistics(self._started.value, self._finished.value, self._running, hub)

    async def serve(self, *, task_status: trio.TaskStatus[Culler] = trio.TASK_STATUS_IGNORED) -> None:
        """Run passes until :meth:`stop`. Reports started (with ``self``) once the hub answered."""
        try:
            with self._drain.scope:
                async with (
                    open_hub_client(self.config, transport=self._transport) as hub,
                    # Inside the hub client: leaving revokes every per-server token, then the client closes.
                    open_server_credentials(hub, self.config) as credentials,
                ):
                    self._hub = hub
                    probe = await self._wait_for_hub(hub)
                    if probe is None:
                        return
                    task_status.started(self)
                    async with open_notifier(self.config, hub=hub, credentials=credentials) as notifier:
                        await self._loop(hub, notifier, probe, credentials)
        finally:
            self._ended.set()

    def stop(self, grace: float = DEFAULT_GRACE) -> None:
        """Stop gracefully: no new page or user is taken, requests in flight get ``grace`` seconds, then
        whatever is left is cancelled. Safe to call more than once; ``grace=0`` stops at once, and so does a
        culler with no pass running (waiting for the hub, or between passes: nothing is in flight)."""
        self._drain.stop(grace if self._running else 0)

    async def run_pass_now(self) -> PassReport:
        """Start a pass now (or right after the one running) and return its report.

        Raises :class:`CullerStopped` at once on a culler that was stopped or whose :meth:`serve` is over, and
        wakes with it every caller still waiting when :meth:`serve` ends. A caller waiting for the pass under
        way when :meth:`stop` is called gets that pass's (interrupted) report."""
        if self._drain.draining.is_set() or self._ended.is_set():
            raise CullerStopped("the culler is stopped: no pass will run any more")
        target = self._started.value + 1
        self._requested.value = max(self._requested.value, target)
        await wait_any(partial(self._finished.wait_value, lambda finished: finished >= target), self._ended.wait)
        if self._finished.value < target:
            raise CullerStopped("the culler stopped before the pass asked for ran: no pass will run any more")
        assert self.last_report is not None
        return self.last_report

    async def _wait_for_hub(self, hub: HubClient) -> Probe | None:
        """Probe until the hub accepts the token, saying at once why not and when the next try is. A managed
        service that exits is restarted by the hub in a loop, culling nothing; waiting here is the better
        failure. Each try is one attempt: the wait between tries is the one this loop announces. None when a
        stop came first."""
        interval = self.config.interval
        # Doubling from a second up to a minute, or the interval between passes when that is shorter.
        backoff = Backoff(first=1.0, cap=min(_STARTUP_RETRY_CAP, max(interval, 1.0)))

        def announce(error: HubError, wait: float, _retry: int) -> None:
            self._tell_probe_listeners(error)
            level, text = _REFUSED if isinstance(error, HubAuthError) else _NOT_READY
            log.log(level, text, self.config.url, error, wait, extra={"event": "startup_retry", "error": error.kind})

        async def pause(wait: float) -> None:
            with trio.move_on_after(wait):
                await self._drain.draining.wait()
            if self._drain.draining.is_set():
                raise _Stopped

        if self._drain.draining.is_set():
            return None
        try:
            probe = await retry(
                lambda: probe_hub(hub, retries=0),
                failure=HubError,
                backoff=backoff,
                retries=None,
                # Fixing a token needs an operator; no point in hammering the hub meanwhile.
                asked=lambda error: interval if isinstance(error, HubAuthError) else None,
                before_wait=announce,
                sleep=pause,
            )
        except _Stopped:
            return None
        self._tell_probe_listeners(None)
        log.info("Hub %s answered at %s", probe.info.version, self.config.url)
        return probe

    def _tell_probe_listeners(self, error: HubError | None) -> None:
        for listener in self._probe_listeners:
            try:
                listener(error)
            except Exception:
                log.exception("A probe listener failed")

    async def _loop(
        self, hub: HubClient, notifier: Notifier | None, probe: Probe | None, credentials: ServerCredentials
    ) -> None:
        # Start-to-start spacing, as the original's PeriodicCallback; an overlong pass is followed at once. Not
        # trio_util.periodic(): its sleep cannot be cut short, and run_pass_now() must start a pass early.
        next_start = trio.current_time()
        while True:
            with trio.move_on_at(next_start):
                await wait_any(self._drain.draining.wait, self._wait_requested)
            if self._drain.draining.is_set():
                return
            started = trio.current_time()
            self._started.value += 1
            self._running = True
            credentials.begin_pass()
            try:
                # The start-up probe serves the first pass; every later pass probes again.
                report = await run_pass_with(
                    hub,
                    self.config,
                    draining=self._drain.draining,
                    notifier=notifier,
                    probe=probe,
                    credentials=credentials,
                    group_check=self._group_check,
                )
                if notifier is not None:
                    # Taken now, between passes: the page never reads the notifier while one runs.
                    report = attrs.evolve(report, warnings_now=notifier.now())
                report = await self._confirm_stops(hub, report)
            finally:
                self._running = False
            # Only a pass that saw every user may conclude that a server it did not ask about needs no token.
            await credentials.end_pass(
                complete=report.aborted is None and not report.interrupted and not report.pages_failed
            )
            probe = None
            self.last_report = report
            self._outage.observe(report)
            publish(report, self._reporters)
            self._finished.value += 1
            next_start = started + self.config.interval

    async def _confirm_stops(self, hub: HubClient, report: PassReport) -> PassReport:
        """The report, with the stops of earlier passes still under way that the hub now shows done."""
        if self._stops and report.hub_up and not self._drain.draining.is_set():
            report = attrs.evolve(report, stops_confirmed=await self._stops.confirm(hub))
        self._stops.follow(report)
        return report

    async def _wait_requested(self) -> None:
        await self._requested.wait_value(lambda requested: requested > self._started.value)


def publish(report: PassReport, reporters: Sequence[Reporter]) -> None:
    """The end of every pass, whoever ran it: the one summary line, then each reporter (one failing reporter
    neither stops the others nor the culler)."""
    level = logging.ERROR if report.aborted else logging.INFO
    log.log(level, report.summary(), extra=report.log_fields())
    for reporter in reporters:
        try:
            reporter(report)
        except Exception:
            log.exception("A pass reporter failed")


async def serve(
    config: Config,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    reporters: Sequence[Reporter] = (),
    task_status: trio.TaskStatus[Culler] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a culler until cancelled or stopped; ``await nursery.start(serve, config)`` returns its handle."""
    await Culler(config, transport=transport, reporters=reporters).serve(task_status=task_status)


@asynccontextmanager
async def open_culler(
    config: Config,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    reporters: Sequence[Reporter] = (),
    grace: float = DEFAULT_GRACE,
) -> AsyncIterator[Culler]:
    """``async with open_culler(config) as culler:`` runs the culler in the background of the block.

    Leaving the block stops it gracefully: a pass under way gets ``grace`` seconds (or less, if
    :meth:`Culler.stop` was already called with a shorter one) to finish the requests in flight."""
    async with trio.open_nursery() as nursery:
        culler = Culler(config, transport=transport, reporters=reporters)
        await nursery.start(lambda task_status: culler.serve(task_status=task_status))
        try:
            yield culler
        finally:
            culler.stop(grace)


async def run_pass(
    config: Config,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    now: datetime | None = None,
    draining: trio.Event | None = None,
    recorder: PassRecorder | None = None,
    reporters: Sequence[Reporter] = (),
) -> PassReport:
    """One complete pass with its own HTTP client; returns the report (it never raises for hub trouble).

    The report is logged (the one summary line) and handed to each of ``reporters``, as after every pass of
    :class:`Culler`. ``draining``, once set, ends the pass early and gracefully; ``recorder`` lets a caller
    watch the counters while the pass runs (the CLI's progress bar does)."""
    async with (
        open_hub_client(config, transport=transport) as hub,
        # One pass: its tokens are revoked when it ends, so they need to live no longer than it does.
        open_server_credentials(hub, config, lifetime=MIN_LIFETIME) as credentials,
    ):
        credentials.begin_pass()
        report = await run_pass_with(
            hub,
            config,
            now=now,
            draining=draining,
            recorder=recorder,
            credentials=credentials,
            group_check=GroupCheck(config.rules),
        )
    publish(report, reporters)
    return report
