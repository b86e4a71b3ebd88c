"""Warnings before a cull: ``c.IdleCuller.warn_hook`` and/or a JSON POST to ``--warn-url``, never in a pass's way.

::

    pass (worker) --warn(): remembered, queued, returns at once--> bounded queue --> delivery tasks
                                                                                    hook (own timeout)
                                                                                    POST (retried, own timeout)

What the pass decides, and what is delivered, are separate: the pass asks :meth:`Notifier.hold` whether a
server may be culled now. A server gets at most one warning per idle stretch; the stretch is named by the time
it would be culled (``cull_at``), which moves when the server sees activity, so activity since the warning
starts a new stretch. A server the pass would cull before its user was warned is warned now and kept until
``--warn-before`` seconds later: the warning always gives the notice it promises. A failing, slow or hanging
hook or URL costs its delivery task only; it is logged and counted (``trio_culler_warnings_total``), and the
cull goes ahead at the promised time.

The state is bounded: only servers inside their warning window are remembered, an entry not seen by a
complete pass is dropped, and at most :data:`MAX_REMEMBERED` entries are kept (the oldest go first).

The POST goes through its own ``httpx.AsyncClient`` (over the project's h11 transport, or httpx's own with
``--use-proxy-env``), which never carries the hub's token: the webhook is often outside the hub's trust
boundary.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import attrs
import httpx
import trio

from ._clients import http_client
from ._config import Config, WarnHook
from ._redact import shown_url
from ._retry import Backoff, retry
from ._time import iso_utc

__all__ = ["CullWarning", "Notifier", "NotifierStatistics", "open_notifier"]

log = logging.getLogger("trio_culler")

#: Warnings waiting for delivery at most; past that a warning is dropped (and counted as failed).
MAX_QUEUED = 1000
#: Servers remembered as warned at most (each entry is two names and two timestamps).
MAX_REMEMBERED = 100_000
#: Concurrent deliveries: a slow webhook must not hold back the warnings behind it.
DELIVERY_TASKS = 4
#: Total seconds one warning's delivery may take, hook and POST (with its retries) together.
DELIVERY_TIMEOUT = 30.0
#: Attempts at the POST, and the pause after the n-th failed one.
POST_ATTEMPTS = 3
POST_BACKOFF = 1.0


@attrs.frozen
class CullWarning:
    """One warning: who, which server, when it will be culled and why."""

    user: str
    server: str
    cull_at: datetime
    #: The code of the cull its judgment foresees (``_codes.DecisionCode``): ``idle``, ``max_age``,
    #: ``kernels_idle`` or ``busy_expired``.
    reason: str
    idle_seconds: float | None
    user_model: Any = attrs.field(eq=False, repr=False, factory=dict)
    server_model: Any = attrs.field(eq=False, repr=False, factory=dict)

    def payload(self) -> dict[str, Any]:
        """The JSON object POSTed to ``--warn-url``."""
        return {
            "user": self.user,
            "server": self.server,
            "cull_at": iso_utc(self.cull_at),
            "reason": self.reason,
            "idle_seconds": None if self.idle_seconds is None else round(self.idle_seconds, 3),
        }


@attrs.frozen
class NotifierStatistics:
    sent: int
    failed: int
    queued: int
    remembered: int
    #: Deliveries under way (a hook or POST not yet returned): with ``queued``, the warnings still pending.
    delivering: int = 0


@attrs.define
class _Entry:
    #: When the server would be culled by its rule when warned: a different value is a new idle stretch.
    due: datetime
    #: When it may be culled: ``due``, or ``warn_before`` after the warning for a server warned late.
    promised: datetime


class Notifier:
    """Remembers whom it warned and queues deliveries. Its methods never wait: a pass calls them freely."""

    def __init__(self, config: Config, send: trio.MemorySendChannel[CullWarning]) -> None:
        self.warn_before = timedelta(seconds=config.warn_before)
        self.dry_run = config.dry_run
        self._send = send
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._seen: set[tuple[str, str]] = set()
        self.sent = 0
        self.failed = 0
        self.delivering = 0
        self._reported_sent = 0
        self._reported_failed = 0

    def statistics(self) -> NotifierStatistics:
        return NotifierStatistics(
            self.sent, self.failed, self._send.statistics().current_buffer_used, len(self._entries), self.delivering
        )

    def in_window(self, due: datetime, now: datetime) -> bool:
        """Whether a server due at ``due`` is to be warned now (or already is due)."""
        return due - now <= self.warn_before

    def hold(self, warning: CullWarning, *, due: datetime, now: datetime, culling: bool) -> datetime | None:
        """Account for a server whose cull time by its rule is ``due``; ``culling`` says whether the pass
        decided to cull it. Warns when the server enters its window (once per stretch). Returns the time
        until which a cull must wait (the pass keeps the server), or None when it may go ahead."""
        key = (warning.user, warning.server)
        self._seen.add(key)
        entry = self._entries.get(key)
        if entry is not None and entry.due != due:
            # Activity moved the cull time: a new idle stretch, which earns its own warning.
            del self._entries[key]
            entry = None
        if entry is None:
            if not culling and not self.in_window(due, now):
                return None
            promised = max(due, now + self.warn_before) if culling else due
            self._remember(key, _Entry(due, promised))
            self._queue(attrs.evolve(warning, cull_at=promised))
            entry = self._entries[key]
        # Kept after the cull: a stop that fails is retried next pass without a second warning; the entry
        # goes when a complete pass no longer sees the server.
        return entry.promised if culling and now < entry.promised else None

    def end_pass(self, *, complete: bool) -> tuple[int, int]:
        """Forget servers a complete pass did not see in their window (stopped, or active again); return the
        warnings sent and failed since the last call, for the pass report."""
        if complete:
            for key in [key for key in self._entries if key not in self._seen]:
                del self._entries[key]
        self._seen = set()
        sent, failed = self.sent - self._reported_sent, self.failed - self._reported_failed
        self._reported_sent, self._reported_failed = self.sent, self.failed
        return sent, failed

    def _remember(self, key: tuple[str, str], entry: _Entry) -> None:
        if len(self._entries) >= MAX_REMEMBERED:
            # Dicts keep insertion order: the oldest warning is forgotten first.
            del self._entries[next(iter(self._entries))]
        self._entries[key] = entry

    def _queue(self, warning: CullWarning) -> None:
        label = f"{warning.user}/{warning.server}" if warning.server else warning.user
        fields = {"user": warning.user, "server": warning.server, "event": "warning", **_log_fields(warning)}
        if self.dry_run:
            log.info("Would warn the user of server %s: cull at %s [dry run]", label, fields["cull_at"], extra=fields)
            return
        log.info(
            "Warning the user of server %s: cull at %s (%s)", label, fields["cull_at"], warning.reason, extra=fields
        )
        try:
            self._send.send_nowait(warning)
        except trio.WouldBlock:
            self.failed += 1
            log.error("Warning queue full (%d): dropped the warning for %s", MAX_QUEUED, label, extra=fields)


def _log_fields(warning: CullWarning) -> dict[str, Any]:
    payload = warning.payload()
    return {"cull_at": payload["cull_at"], "reason": warning.reason, "idle_seconds": payload["idle_seconds"]}


@asynccontextmanager
async def open_notifier(
    config: Config, *, transport: httpx.AsyncBaseTransport | None = None
) -> AsyncIterator[Notifier | None]:
    """A :class:`Notifier` with its delivery tasks, or None when no warnings are configured. On exit, the
    warnings still queued get up to :data:`DELIVERY_TIMEOUT` seconds, then are abandoned."""
    if not config.warn_before:
        yield None
        return
    send, receive = trio.open_memory_channel[CullWarning](MAX_QUEUED)
    notifier = Notifier(config, send)
    async with _open_webhook_client(config, transport) as client, trio.open_nursery() as nursery:
        async with receive:
            for _ in range(DELIVERY_TASKS):
                nursery.start_soon(_deliver_all, notifier, config, client, receive.clone())
        try:
            yield notifier
        finally:
            send.close()
            nursery.cancel_scope.deadline = trio.current_time() + DELIVERY_TIMEOUT


@asynccontextmanager
async def _open_webhook_client(
    config: Config, transport: httpx.AsyncBaseTransport | None
) -> AsyncIterator[httpx.AsyncClient | None]:
    if config.warn_url is None:
        yield None
        return
    # A client of its own, made as every client of the culler's (no redirects: one could move the payload
    # somewhere else), with the system's trust store rather than the hub's TLS settings, and no credential: the
    # webhook is often outside the hub's trust boundary.
    async with http_client(config, timeout=10.0, transport=transport, connections=DELIVERY_TASKS) as client:
        yield client


async def _deliver_all(
    notifier: Notifier,
    config: Config,
    client: httpx.AsyncClient | None,
    receive: trio.MemoryReceiveChannel[CullWarning],
) -> None:
    async with receive:
        async for warning in receive:
            label = f"{warning.user}/{warning.server}" if warning.server else warning.user
            notifier.delivering += 1
            try:
                with trio.fail_after(DELIVERY_TIMEOUT):
                    if config.warn_hook is not None:
                        await _call_hook(config.warn_hook, warning)
                    if client is not None and config.warn_url is not None:
                        await _post(client, config.warn_url, warning)
            except Exception as error:
                notifier.failed += 1
                reason = "timed out" if isinstance(error, trio.TooSlowError) else f"{type(error).__name__}: {error}"
                log.error(
                    "Could not warn the user of server %s: %s",
                    label,
                    reason,
                    extra={"user": warning.user, "server": warning.server, "event": "warning_failed"},
                )
            else:
                notifier.sent += 1
            finally:
                notifier.delivering -= 1


async def _call_hook(hook: WarnHook, warning: CullWarning) -> None:
    kwargs = {"user": warning.user_model, "server": warning.server_model, "cull_at": warning.cull_at}
    if inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(getattr(hook, "__call__", None)):  # noqa: B004
        result: object = hook(**kwargs)
    else:
        # A sync hook may block (an SMTP call, say): it runs in a thread so the passes' event loop never waits
        # on it; a thread that overruns the deadline is abandoned, not joined.
        result = await trio.to_thread.run_sync(lambda: hook(**kwargs), abandon_on_cancel=True)
    if inspect.isawaitable(result):
        await result


class _PostFailed(Exception):
    def __init__(self, problem: str, *, final: bool) -> None:
        super().__init__(problem)
        self.final = final


async def _post(client: httpx.AsyncClient, url: str, warning: CullWarning) -> None:
    payload = warning.payload()

    async def attempt() -> None:
        try:
            response = await client.post(url, json=payload)
        except httpx.HTTPError as error:
            raise _PostFailed(f"{type(error).__name__}: {error}".rstrip(": "), final=False) from None
        if response.is_success:
            return
        status = response.status_code
        # A 4xx says the request itself is wrong: the same POST would be refused again (timeouts and rate
        # limits aside).
        raise _PostFailed(f"HTTP {status}", final=400 <= status < 500 and status not in (408, 429))

    try:
        await retry(
            attempt,
            failure=_PostFailed,
            backoff=Backoff(first=POST_BACKOFF, cap=math.inf),
            retries=POST_ATTEMPTS - 1,
            retryable=lambda failed: not failed.final,
        )
    except _PostFailed as failed:
        if failed.final:
            raise RuntimeError(f"{shown_url(url)} answered {failed}") from None
        raise RuntimeError(f"{shown_url(url)}: {failed} after {POST_ATTEMPTS} attempts") from None
